// Vite config of the example. In development the Vite dev server proxies /auth and
// /api to portcullis, so the browser sees one origin (the dev server's) and the
// session cookie, the XSRF-TOKEN cookie and the login redirect all work as in
// production. Point PORTCULLIS_URL at the gateway (default http://127.0.0.1:8080),
// whose `server.public_url` must be this dev server's origin (see docs/frontend.md).
import { fileURLToPath, URL } from 'node:url';
import vue from '@vitejs/plugin-vue';
import { defineConfig } from 'vite';

const gateway = process.env.PORTCULLIS_URL ?? 'http://127.0.0.1:8080';
const client = fileURLToPath(new URL('../../clients/js/src/index.ts', import.meta.url));

export default defineConfig({
  plugins: [vue()],
  resolve: {
    // The client from this repository's source; an app of your own installs
    // `portcullis-client` from npm instead and needs no alias.
    alias: { 'portcullis-client': client },
  },
  server: {
    port: 5173,
    strictPort: true,
    fs: { allow: ['.', fileURLToPath(new URL('../../clients/js', import.meta.url))] },
    proxy: {
      // Keep the Host header (no changeOrigin): the gateway sees the dev server's origin.
      '/auth': { target: gateway },
      '/api': { target: gateway },
    },
  },
  build: { outDir: 'dist', emptyOutDir: true },
});

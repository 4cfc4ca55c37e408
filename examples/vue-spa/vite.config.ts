// Vite config of the example. In development the Vite dev server proxies /auth and
// /api to portcullis, so the browser sees one origin (the dev server's) and the
// session cookie, the XSRF-TOKEN cookie and the login redirect all work as in
// production. Point PORTCULLIS_URL at the gateway (default http://127.0.0.1:8080),
// whose `server.public_url` must be this dev server's origin (see docs/frontend.md).
import vue from '@vitejs/plugin-vue';
import { defineConfig } from 'vite';

const gateway = process.env.PORTCULLIS_URL ?? 'http://127.0.0.1:8080';

export default defineConfig({
  plugins: [vue()],
  server: {
    port: 5173,
    strictPort: true,
    proxy: {
      // Keep the Host header (no changeOrigin): the gateway sees the dev server's origin.
      '/auth': { target: gateway },
      '/api': { target: gateway },
    },
  },
  build: { outDir: 'dist', emptyOutDir: true },
});

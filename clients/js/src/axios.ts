// axios bindings: the CSRF header on unsafe methods (from `/auth/me`'s token or the
// cookie), and a 401 `session_expired`/`unauthorized` handled like `apiFetch` does:
// a silent login if the client enables it (then the request goes once more), else the
// client's `onSessionExpired` (default: a full login redirect).
import type { AxiosError, AxiosInstance, InternalAxiosRequestConfig } from 'axios';
import { defaultClient, type GatewayError, type PortcullisClient } from './index.js';

export interface AxiosBindingOptions {
  /** Default: the shared client of `configure`. */
  client?: PortcullisClient;
  /** The gateway's `csrf.header`; default `X-XSRF-TOKEN`. */
  csrfHeader?: string;
}

type Config = InternalAxiosRequestConfig & { portcullisRetry?: boolean };

/** Adds the interceptors to `instance`; returns a function that removes them. */
export function attachPortcullis(instance: AxiosInstance, options: AxiosBindingOptions = {}): () => void {
  const client = options.client ?? defaultClient();
  const header = options.csrfHeader ?? 'X-XSRF-TOKEN';
  const request = instance.interceptors.request.use((config: Config) => {
    const token = client.csrfToken();
    // A retry after a silent login needs the new session's token, so it is always set.
    if (token && !/^(get|head|options|trace)$/i.test(config.method ?? 'get')) {
      config.headers.set(header, token);
    }
    return config;
  });
  const response = instance.interceptors.response.use(
    (answer) => {
      client.touched();
      return answer;
    },
    async (error: AxiosError) => {
      const config = error.config as Config | undefined;
      const body = error.response?.data as GatewayError | undefined;
      if (
        config &&
        !config.portcullisRetry &&
        error.response?.status === 401 &&
        /^(session_expired|unauthorized)$/.test(body?.error ?? '') &&
        (await client.recover(body!))
      ) {
        return instance.request({ ...config, portcullisRetry: true } as Config);
      }
      throw error;
    },
  );
  return () => {
    instance.interceptors.request.eject(request);
    instance.interceptors.response.eject(response);
  };
}

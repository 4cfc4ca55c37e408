// Routes and the guard: anonymous users go to the gateway's login (and come back
// to the page they asked for); views that need a role are refused without it.
import { createRouter, createWebHistory } from 'vue-router';
import { auth, hasRole, ready, session } from './session';
import Home from './views/Home.vue';

declare module 'vue-router' {
  interface RouteMeta {
    requiresAuth?: boolean;
    role?: string;
  }
}

export const router = createRouter({
  history: createWebHistory(),
  routes: [
    { path: '/', name: 'home', component: Home },
    {
      path: '/console',
      name: 'console',
      component: () => import('./views/Console.vue'),
      meta: { requiresAuth: true },
    },
    {
      path: '/admin',
      name: 'admin',
      component: () => import('./views/Admin.vue'),
      meta: { requiresAuth: true, role: 'admin' },
    },
    { path: '/:rest(.*)*', redirect: '/' },
  ],
});

router.beforeEach(async (to) => {
  // The first /auth/me. If the gateway or store is down, `session.error` is set and
  // the user counts as signed out.
  await ready;
  if (to.meta.requiresAuth && !session.me) {
    auth.login(to.fullPath);
    return false;
  }
  if (to.meta.role && !hasRole(to.meta.role)) {
    return { name: 'home', query: { denied: to.fullPath } };
  }
  return true;
});

// Another tab logged out: leave the views that need a session.
auth.onSessionChange((change) => {
  if (change.type !== 'login' && router.currentRoute.value.meta.requiresAuth) {
    void router.push({ name: 'home' });
  }
});

import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { createBrowserRouter, RouterProvider } from 'react-router-dom';
import { App, RequireAuth } from './App';
import { Admin } from './views/Admin';
import { Console } from './views/Console';
import { Home } from './views/Home';
import './style.css';

const router = createBrowserRouter([
  {
    path: '/',
    element: <App />,
    children: [
      { index: true, element: <Home /> },
      { path: 'console', element: <RequireAuth><Console /></RequireAuth> },
      { path: 'admin', element: <RequireAuth role="admin"><Admin /></RequireAuth> },
      { path: '*', element: <Home /> },
    ],
  },
]);

createRoot(document.getElementById('app')!).render(
  <StrictMode>
    <RouterProvider router={router} />
  </StrictMode>,
);

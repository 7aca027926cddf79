// The HMR test rewrites this line while the dev server runs.
export const message = "Hello from Vite";

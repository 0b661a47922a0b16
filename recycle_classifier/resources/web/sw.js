// Keeps the folder (page, model, runtime) in the browser's cache, so the page works offline once it has loaded,
// and answers with the headers that let the runtime use threads (cross-origin isolation): app.js reloads a first
// visit once this worker controls it, so threads start at once on any static host.
'use strict';
const VERSION = new URL(self.location.href).searchParams.get('v') || '0';
const CACHE = `recycle-classifier-web-${VERSION}`;
const ISOLATION = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };

self.addEventListener('install', event => {
  event.waitUntil((async () => {
    const config = await (await fetch('config.json', { cache: 'no-cache' })).json();
    const cache = await caches.open(CACHE);
    // a first visit waits for this copy before it loads the model (then reloads from it, isolated); a page that has
    // already fetched these files (a new export's worker) finds them in the HTTP cache where it still has them
    await cache.addAll(['./', ...config.files].map(f => new Request(f, { cache: 'force-cache' })));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', event => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) if (key.startsWith('recycle-classifier-web-') && key !== CACHE) await caches.delete(key);
    await self.clients.claim();
  })());
});

function isolated(response) {
  if (!response || response.type === 'opaque') return response;
  const headers = new Headers(response.headers);
  for (const [k, v] of Object.entries(ISOLATION)) headers.set(k, v);
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

self.addEventListener('fetch', event => {
  const req = event.request;
  if (req.method !== 'GET' || new URL(req.url).origin !== self.location.origin) return;
  // the page and config.json from the network when it answers (a new export takes over), else from the cache;
  // everything else (model, runtime, scripts: fixed for one export) from the cache first
  const fresh = req.mode === 'navigate' || new URL(req.url).pathname.endsWith('/config.json');
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    if (fresh) {
      try { return isolated(await fetch(req)); }
      catch (e) { const hit = await cache.match(req, { ignoreSearch: true }); if (hit) return isolated(hit); throw e; }
    }
    const hit = await cache.match(req, { ignoreSearch: true });
    return isolated(hit || await fetch(req));
  })());
});

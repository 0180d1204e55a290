// An API that trusts Tessera's access tokens: each signed-in person keeps a list of notes.
// The page in public/ signs in through Tessera (another origin, listed in its
// TESSERA_CORS_ORIGINS) with the browser client and calls this API with the same cookies.
//
//   TESSERA_URL=http://127.0.0.1:8080 PORT=3000 node server.js
import express from 'express';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireAuth, requireRole } from '@tessera-auth/express';

const here = dirname(fileURLToPath(import.meta.url));

export function createApp({ tesseraUrl, issuer = tesseraUrl, audience = 'tessera', clientDist }) {
  const app = express();
  const auth = requireAuth({ issuer, audience, jwksUrl: `${tesseraUrl}/.well-known/jwks.json` });
  const notes = new Map();

  app.use(express.json({ limit: '16kb' }));
  app.use(express.static(join(here, 'public')));
  // The browser client, as built by `npm run build` in clients/js.
  app.use('/client', express.static(clientDist ?? join(here, '../../clients/js/dist')));
  app.get('/config.json', (_req, res) => res.json({ tesseraUrl }));

  app.get('/api/notes', auth, (req, res) => {
    res.json({ userId: req.auth.userId, notes: notes.get(req.auth.userId) ?? [] });
  });
  app.post('/api/notes', auth, (req, res) => {
    const text = typeof req.body?.text === 'string' ? req.body.text.trim().slice(0, 500) : '';
    if (!text) {
      return res.status(422).type('application/problem+json').json({
        type: 'about:blank', title: 'Unprocessable Content', status: 422,
        code: 'validation_failed', detail: 'text is required',
        errors: [{ field: 'text', message: 'must not be empty' }],
      });
    }
    const list = notes.get(req.auth.userId) ?? [];
    const note = { id: list.length + 1, text, at: new Date().toISOString() };
    notes.set(req.auth.userId, [...list, note]);
    res.status(201).json(note);
  });
  app.get('/api/admin/stats', auth, requireRole('admin'), (_req, res) => {
    res.json({ people: notes.size });
  });
  return app;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const tesseraUrl = process.env.TESSERA_URL ?? 'http://127.0.0.1:8080';
  const port = Number(process.env.PORT ?? 3000);
  createApp({ tesseraUrl, issuer: process.env.TESSERA_ISSUER ?? tesseraUrl }).listen(port, '127.0.0.1', () => {
    console.log(`listening on http://127.0.0.1:${port}`);
  });
}

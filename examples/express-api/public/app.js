// The whole of a page's integration: one client, `client.fetch` for the API, and the
// signed-out event to show the sign-in form again.
import { TesseraClient, TesseraError } from '/client/index.js';

const { tesseraUrl } = await (await fetch('/config.json')).json();
const client = new TesseraClient({ baseUrl: tesseraUrl, transport: 'cookie' });
const $ = (id) => document.getElementById(id);

function showSignIn(message) {
  $('status').textContent = message;
  $('sign-in').hidden = false;
  $('notes').hidden = true;
}

async function api(method, path, body) {
  const response = await client.fetch(path, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json();
  if (!response.ok) throw Object.assign(new Error(data.detail ?? data.code), { code: data.code, status: response.status });
  return data;
}

async function loadNotes() {
  const { notes } = await api('GET', '/api/notes');
  $('list').replaceChildren(...notes.map((n) => Object.assign(document.createElement('li'), { textContent: n.text })));
  $('status').textContent = `${notes.length} note${notes.length === 1 ? '' : 's'}`;
  $('sign-in').hidden = true;
  $('notes').hidden = false;
  return notes;
}

client.onSignedOut(({ code }) => showSignIn(`Signed out (${code}).`));

$('sign-in').addEventListener('submit', async (event) => {
  event.preventDefault();
  try {
    await client.login($('email').value, $('password').value);
    await loadNotes();
  } catch (e) {
    showSignIn(e instanceof TesseraError ? e.message : String(e));
  }
});
$('add').addEventListener('submit', async (event) => {
  event.preventDefault();
  await api('POST', '/api/notes', { text: $('text').value });
  $('text').value = '';
  await loadNotes();
});
$('sign-out').addEventListener('click', async () => {
  await client.logout();
});

// For scripts driving the page (the browser suite).
window.example = { client, api, loadNotes };

if (client.signedIn) {
  loadNotes().catch((e) => showSignIn(e.message));
} else {
  showSignIn('Sign in to see your notes.');
}

// WebAuthn's JSON as Tessera speaks it (binary fields base64url, as webauthn-rs reads and
// writes them) and the browser's binary form (`ArrayBuffer`s), both ways, so passkey
// ceremonies need nothing more than `navigator.credentials.create/get`.

/** A passkey registered to the account. */
export interface Passkey {
  id: string;
  name: string;
  created_at: string;
  /** The last sign-in with it; `null` before the first. */
  last_used_at: string | null;
}

/** What the ceremonies need of `navigator.credentials` (tests pass a fake). */
export interface CredentialsContainerLike {
  create(options: CredentialCreationOptions): Promise<Credential | null>;
  get(options: CredentialRequestOptions): Promise<Credential | null>;
}

type Json = Record<string, unknown>;

/** base64url (no padding) → bytes. */
export function base64urlToBytes(text: string): Uint8Array {
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4);
  const binary = atob(base64);
  const bytes = new Uint8Array(new ArrayBuffer(binary.length));
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** bytes → base64url without padding. */
export function bytesToBase64url(data: ArrayBuffer | ArrayBufferView): string {
  const bytes =
    data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** The options without `null` members: WebIDL dictionaries take a missing member, not null. */
function withoutNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutNulls);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value as Json)
        .filter(([, v]) => v !== null && v !== undefined)
        .map(([k, v]) => [k, withoutNulls(v)]),
    );
  }
  return value;
}

function descriptors(list: unknown): PublicKeyCredentialDescriptor[] | undefined {
  if (!Array.isArray(list)) return undefined;
  return list.map((d: Json) => ({ ...(d as object), id: base64urlToBytes(String(d.id)) }) as unknown as PublicKeyCredentialDescriptor);
}

/** `publicKey` of `POST /v1/account/passkeys/register/options` → what `credentials.create` takes. */
export function creationOptionsFromJSON(publicKey: Json): PublicKeyCredentialCreationOptions {
  const pk = withoutNulls(publicKey) as Json;
  const user = pk.user as Json;
  return {
    ...(pk as object),
    challenge: base64urlToBytes(String(pk.challenge)),
    user: { ...(user as object), id: base64urlToBytes(String(user.id)) },
    excludeCredentials: descriptors(pk.excludeCredentials),
  } as unknown as PublicKeyCredentialCreationOptions;
}

/** `publicKey` of `POST /v1/auth/passkey/options` → what `credentials.get` takes. */
export function requestOptionsFromJSON(publicKey: Json): PublicKeyCredentialRequestOptions {
  const pk = withoutNulls(publicKey) as Json;
  return {
    ...(pk as object),
    challenge: base64urlToBytes(String(pk.challenge)),
    allowCredentials: descriptors(pk.allowCredentials),
  } as unknown as PublicKeyCredentialRequestOptions;
}

/** A `PublicKeyCredential` from `create` or `get` → the JSON Tessera reads. */
export function credentialToJSON(credential: Credential): Json {
  const c = credential as PublicKeyCredential;
  const r = c.response as AuthenticatorAttestationResponse & AuthenticatorAssertionResponse;
  const response: Json = { clientDataJSON: bytesToBase64url(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = bytesToBase64url(r.attestationObject);
    if (typeof r.getTransports === 'function') response.transports = r.getTransports();
  } else {
    response.authenticatorData = bytesToBase64url(r.authenticatorData);
    response.signature = bytesToBase64url(r.signature);
    response.userHandle = r.userHandle ? bytesToBase64url(r.userHandle) : null;
  }
  return {
    id: c.id,
    rawId: bytesToBase64url(c.rawId),
    type: c.type,
    response,
    clientExtensionResults: typeof c.getClientExtensionResults === 'function' ? c.getClientExtensionResults() : {},
  };
}

export function defaultCredentials(): CredentialsContainerLike {
  const container = (globalThis as { navigator?: { credentials?: CredentialsContainerLike } }).navigator?.credentials;
  if (!container) throw new Error('This environment has no navigator.credentials: passkeys need a browser.');
  return container;
}

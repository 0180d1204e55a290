// The sign-in side of a React Native / Expo app, as it would be written there: the app hands
// in its store (AsyncStorage as it is, or Expo SecureStore through the adapter below) and
// uses `auth.client.fetch` for its API. Nothing here is specific to React Native, so the test
// next to it runs it in Node against the real server.
//
//   import AsyncStorage from '@react-native-async-storage/async-storage';
//   export const auth = createAuth({ baseUrl: 'https://auth.example.com', storage: AsyncStorage });
//
//   import * as SecureStore from 'expo-secure-store';
//   export const auth = createAuth({ baseUrl: 'https://auth.example.com',
//                                    storage: secureStoreAdapter(SecureStore) });
import { TesseraClient, TesseraError } from '@tessera-auth/client';

/** Expo SecureStore (the iOS Keychain, Android's Keystore) as the client's storage. Its keys
 * allow only letters, digits, `.`, `-` and `_`, so the client's `<namespace>:state` is mapped. */
export function secureStoreAdapter(SecureStore) {
  const key = (name) => name.replace(/[^A-Za-z0-9._-]/g, '.');
  return {
    getItem: (name) => SecureStore.getItemAsync(key(name)),
    setItem: (name, value) => SecureStore.setItemAsync(key(name), value),
    removeItem: (name) => SecureStore.deleteItemAsync(key(name)),
  };
}

export function createAuth({ baseUrl, storage, fetch, onSignedOut }) {
  const client = new TesseraClient({
    baseUrl,
    // Tokens in the response body, kept in `storage`, sent as `Authorization: Bearer`: an app
    // has no cookie jar shared with Tessera (and `cookie` would throw CookiesNotStoredError).
    transport: 'body',
    storage,
    fetch,
    namespace: 'notes-app',
  });
  if (onSignedOut) client.onSignedOut(onSignedOut);

  return {
    client,

    /** At start, before the first screen: is there a session to go on with? */
    restore: () => client.isSignedIn(),

    /** The sign-in screen. Resolves to the user, or to `{ error }` with a message to show. */
    async signIn(email, password) {
      try {
        return { user: (await client.login(email, password)).user };
      } catch (e) {
        if (e instanceof TesseraError) return { error: e.message, code: e.code };
        throw e;
      }
    },

    /** When the app comes back to the foreground (AppState `active`): one call that refreshes
     * the tokens if they expired meanwhile and tells whether the session still stands (it may
     * have been ended from another device). Nothing refreshes in the background. */
    async resume() {
      if (!(await client.isSignedIn())) return null;
      try {
        return (await client.me()).user;
      } catch (e) {
        if (e instanceof TesseraError && e.status === 401) return null; // signed out: onSignedOut fired
        throw e;
      }
    },

    signOut: () => client.logout(),
  };
}

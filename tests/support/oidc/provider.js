// Test-only OpenID provider for condavault's OIDC backend tests.
//
// Runs panva/oidc-provider (an OpenID Certified implementation) on a free loopback port.
// Configuration comes from the environment:
//   OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URIS (space separated),
//   OIDC_ACCOUNTS (JSON: {"<accountId>": {"preferred_username", "email", "name", "groups": [...]}})
// When listening, the first line on stdout is JSON: {"issuer": "http://127.0.0.1:<port>"}.
// The development interactions (login + consent HTML forms) are enabled so that a real
// HTTP client can walk through the browser steps; they accept any login name that is a
// known account id (the password field is not checked by oidc-provider's dev views).
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const clientId = process.env.OIDC_CLIENT_ID ?? 'condavault';
const clientSecret = process.env.OIDC_CLIENT_SECRET ?? 'condavault-secret';
const redirectUris = (process.env.OIDC_REDIRECT_URIS ?? 'http://127.0.0.1:8000/auth/oidc/callback')
  .split(' ')
  .filter(Boolean);
const accounts = JSON.parse(process.env.OIDC_ACCOUNTS ?? '{}');

function signingKeys() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' }] };
}

async function findAccount(ctx, id) {
  const account = accounts[id];
  if (!account) {
    return undefined;
  }
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        preferred_username: account.preferred_username ?? id,
        email: account.email,
        email_verified: true,
        name: account.name,
        groups: account.groups ?? [],
      };
    },
  };
}

function configuration() {
  return {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: redirectUris,
        grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: signingKeys(),
    findAccount,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    cookies: { keys: [randomBytes(32).toString('hex')] },
    pkce: { methods: ['S256'], required: () => true },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
    },
    ttl: {
      DeviceCode: 120,
      AccessToken: 300,
      AuthorizationCode: 60,
      IdToken: 300,
      Interaction: 300,
      Session: 600,
      Grant: 600,
    },
  };
}

let handler = (req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = http.createServer((req, res) => handler(req, res));

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, configuration());
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  handler = provider.callback();
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}

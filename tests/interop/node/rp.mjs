// A relying party built on panva's openid-client (v6), driven by tests/interop/test_openid_client.py.
//
// Protocol (one JSON object per line):
//   config: the environment variable IDP_RP_CONFIG, a JSON object with issuer, client_id,
//           client_secret, redirect_uri, scope and (optional) post_logout_redirect_uri;
//   stdout: {"step": "...", ...} for every step, ending with {"step": "done"}; on a failure
//           {"step": "error", "where": "...", "error": {...}} and exit status 1;
//   stdin:  the test answers "authorize" with {"callback": URL} (the redirect to redirect_uri
//           its browser reached) and "end_session" with {"landing": URL} (where logout ended).
//
// The library does everything a relying party does: discovery, the authorization URL with PKCE
// S256 + state + nonce, the authorization response checks (state, RFC 9207 iss), the code
// exchange and ID token validation, userinfo, refresh, introspection, revocation, end session.
import * as readline from "node:readline";
import * as client from "openid-client";

const cfg = JSON.parse(process.env.IDP_RP_CONFIG ?? "{}");
const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })[Symbol.asyncIterator]();

function emit(step, data = {}) {
  process.stdout.write(JSON.stringify({ step, ...data }) + "\n");
}

async function ask() {
  const { value, done } = await lines.next();
  if (done) throw new Error("stdin closed before the test answered");
  return JSON.parse(value);
}

function describe(err) {
  if (!err || typeof err !== "object") return { message: String(err) };
  const out = { name: err.name, message: err.message };
  for (const key of ["code", "error", "error_description", "status"]) {
    if (err[key] !== undefined) out[key] = err[key];
  }
  if (err.cause && typeof err.cause === "object") {
    out.cause = { name: err.cause.name, message: err.cause.message, code: err.cause.code };
    if (err.cause.error) out.cause.error = err.cause.error;
  }
  return out;
}

/** Run fn and report the error it must throw (or that it did not). */
async function mustFail(fn) {
  try {
    await fn();
    return { failed: false };
  } catch (err) {
    return { failed: true, error: describe(err) };
  }
}

let where = "start";
try {
  where = "discovery";
  // With a client secret and no ClientAuth, openid-client authenticates with client_secret_post;
  // with cfg.private_jwk (a private JWK, RSA or P-256) it uses private_key_jwt (RFC 7523).
  let clientAuth;
  if (cfg.private_jwk) {
    const { kid, alg } = cfg.private_jwk;
    const params = alg === "ES256" ? { name: "ECDSA", namedCurve: "P-256" }
                                   : { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
    const key = await crypto.subtle.importKey("jwk", cfg.private_jwk, params, false, ["sign"]);
    clientAuth = client.PrivateKeyJwt({ key, kid });
  }
  const config = await client.discovery(new URL(cfg.issuer), cfg.client_id, cfg.client_secret ?? undefined, clientAuth, {
    execute: [client.allowInsecureRequests],
  });
  const metadata = config.serverMetadata();
  emit("discovery", { metadata });

  where = "authorize";
  const codeVerifier = client.randomPKCECodeVerifier();
  const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier);
  const state = client.randomState();
  const nonce = client.randomNonce();
  const authorizationUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: cfg.redirect_uri,
    scope: cfg.scope,
    code_challenge: codeChallenge,
    code_challenge_method: "S256",
    state,
    nonce,
  });
  emit("authorize", { url: authorizationUrl.href, state, nonce });
  const { callback } = await ask();

  // The library's own checks of the authorization response, before any code is spent:
  // a wrong or missing RFC 9207 `iss` and a wrong state must each be refused.
  where = "callback_checks";
  const checks = { pkceCodeVerifier: codeVerifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true };
  const tampered = (mutate) => {
    const url = new URL(callback);
    mutate(url.searchParams);
    return url;
  };
  const negative = {
    wrong_iss: await mustFail(() =>
      client.authorizationCodeGrant(config, tampered((p) => p.set("iss", "https://attacker.example")), checks)),
    missing_iss: await mustFail(() =>
      client.authorizationCodeGrant(config, tampered((p) => p.delete("iss")), checks)),
    wrong_state: await mustFail(() =>
      client.authorizationCodeGrant(config, tampered((p) => p.set("state", "not-the-state")), checks)),
  };
  emit("callback_checks", negative);

  where = "authorization_code_grant";
  const tokens = await client.authorizationCodeGrant(config, new URL(callback), checks);
  const claims = tokens.claims();
  emit("token", {
    token_type: tokens.token_type,
    expires_in: tokens.expiresIn() ?? null,
    scope: tokens.scope ?? null,
    has_access_token: Boolean(tokens.access_token),
    has_refresh_token: Boolean(tokens.refresh_token),
    id_token: tokens.id_token,
    claims,
  });

  where = "userinfo";
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  emit("userinfo", { userinfo });

  where = "refresh";
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  emit("refresh", {
    rotated: Boolean(refreshed.refresh_token) && refreshed.refresh_token !== tokens.refresh_token,
    has_refresh_token: Boolean(refreshed.refresh_token),
    new_access_token: Boolean(refreshed.access_token) && refreshed.access_token !== tokens.access_token,
    id_token_claims: refreshed.id_token ? refreshed.claims() : null,
  });
  const userinfoAfterRefresh = await client.fetchUserInfo(config, refreshed.access_token, claims.sub);
  emit("userinfo_after_refresh", { userinfo: userinfoAfterRefresh });

  where = "introspection";
  const introspectedAccess = await client.tokenIntrospection(config, refreshed.access_token);
  const introspectedRefresh = await client.tokenIntrospection(config, refreshed.refresh_token, {
    token_type_hint: "refresh_token",
  });
  emit("introspection", { access: introspectedAccess, refresh: introspectedRefresh });

  where = "revocation";
  await client.tokenRevocation(config, refreshed.access_token, { token_type_hint: "access_token" });
  const afterRevocation = await client.tokenIntrospection(config, refreshed.access_token);
  const userinfoRevoked = await mustFail(() => client.fetchUserInfo(config, refreshed.access_token, claims.sub));
  emit("revocation", { introspection: afterRevocation, userinfo: userinfoRevoked });

  where = "end_session";
  if (metadata.end_session_endpoint && cfg.post_logout_redirect_uri) {
    const logoutState = client.randomState();
    const endSessionUrl = client.buildEndSessionUrl(config, {
      id_token_hint: tokens.id_token,
      post_logout_redirect_uri: cfg.post_logout_redirect_uri,
      state: logoutState,
    });
    emit("end_session", { url: endSessionUrl.href, state: logoutState });
    const { landing } = await ask();
    const back = new URL(landing);
    emit("logged_out", {
      at_post_logout_uri: back.origin + back.pathname === cfg.post_logout_redirect_uri,
      state_matches: back.searchParams.get("state") === logoutState,
    });
    // Logging out revokes the session's refresh tokens.
    where = "refresh_after_logout";
    emit("refresh_after_logout", await mustFail(() => client.refreshTokenGrant(config, refreshed.refresh_token)));
  } else {
    emit("end_session", { url: null });
  }

  // Last (it may revoke what the code issued): a replayed code is refused, and the access token
  // it issued is refused afterwards (RFC 6749 §4.1.2).
  where = "code_replay";
  const before = await mustFail(() => client.fetchUserInfo(config, tokens.access_token, claims.sub));
  const exchange = await mustFail(() => client.authorizationCodeGrant(config, new URL(callback), checks));
  const after = await mustFail(() => client.fetchUserInfo(config, tokens.access_token, claims.sub));
  emit("code_replay", { userinfo_before: before, exchange, userinfo_after: after });
  emit("done");
  process.exit(0);
} catch (err) {
  emit("error", { where, error: describe(err) });
  process.exit(1);
}

// The relay connection check that runs while the call rings: for each transport the relay
// offers (udp, tcp, tls: the turn:/turns: URLs of the iceServers the click returned), a
// relay-only peer connection given only that URL must produce a `relay` candidate within 5 s.
// The verdict (`ok` when every offered transport works, `partial` when some do, `blocked` when
// none does) is what the page tells the visitor and what it posts to /v1/calls/{id}/check.

export const TIMEOUT_MS = 5000;

/** @typedef {"udp" | "tcp" | "tls"} Transport */
/** @typedef {{verdict: "ok" | "partial" | "blocked", transports: Record<Transport, "ok" | "fail" | "skipped">, ms: number}} Verdict */

/**
 * Which transport a TURN URL uses: `turns:` is TLS, `?transport=tcp` is TCP, else UDP;
 * null for STUN URLs (they never give relay candidates).
 * @param {string} url
 * @returns {Transport | null}
 */
export function transportOf(url) {
  const lower = url.toLowerCase();
  if (lower.startsWith("turns:")) return "tls";
  if (!lower.startsWith("turn:")) return null;
  return /[?&]transport=tcp\b/.test(lower) ? "tcp" : "udp";
}

/**
 * One ICE server per transport the servers offer (the first URL of each), with its
 * credentials.
 * @param {RTCIceServer[]} servers
 * @returns {Map<Transport, RTCIceServer>}
 */
export function perTransport(servers) {
  /** @type {Map<Transport, RTCIceServer>} */
  const out = new Map();
  for (const server of servers) {
    const urls = Array.isArray(server.urls) ? server.urls : [server.urls];
    for (const url of urls) {
      const kind = transportOf(url);
      if (kind && !out.has(kind)) {
        out.set(kind, { urls: [url], username: server.username, credential: server.credential });
      }
    }
  }
  return out;
}

/**
 * The verdict from per-transport results.
 * @param {Partial<Record<Transport, "ok" | "fail">>} results
 * @param {number} ms
 * @returns {Verdict}
 */
export function verdict(results, ms) {
  /** @type {Record<Transport, "ok" | "fail" | "skipped">} */
  const transports = { udp: "skipped", tcp: "skipped", tls: "skipped" };
  let ok = 0;
  let tried = 0;
  for (const kind of /** @type {Transport[]} */ (["udp", "tcp", "tls"])) {
    const r = results[kind];
    if (!r) continue;
    transports[kind] = r;
    tried += 1;
    if (r === "ok") ok += 1;
  }
  const v = ok === 0 ? "blocked" : ok === tried ? "ok" : "partial";
  return { verdict: v, transports, ms: Math.round(ms) };
}

/**
 * Whether one ICE server yields a relay candidate within `timeout` ms.
 * @param {RTCIceServer} server
 * @param {number} [timeout]
 * @returns {Promise<"ok" | "fail">}
 */
export function probe(server, timeout = TIMEOUT_MS) {
  return new Promise((resolve) => {
    let pc;
    try {
      pc = new RTCPeerConnection({ iceServers: [server], iceTransportPolicy: "relay" });
    } catch {
      resolve("fail");
      return;
    }
    const conn = pc;
    let done = false;
    /** @param {"ok" | "fail"} r */
    const finish = (r) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      conn.close();
      resolve(r);
    };
    const timer = setTimeout(() => finish("fail"), timeout);
    conn.onicecandidate = (e) => {
      if (e.candidate && / typ relay/.test(e.candidate.candidate)) finish("ok");
      else if (!e.candidate) finish("fail");
    };
    conn.createDataChannel("check");
    conn.createOffer().then((offer) => conn.setLocalDescription(offer)).catch(() => finish("fail"));
  });
}

/**
 * Check every transport at once.
 * @param {RTCIceServer[]} servers
 * @param {(server: RTCIceServer) => Promise<"ok" | "fail">} [probeFn]
 * @returns {Promise<Verdict>}
 */
export async function check(servers, probeFn = probe) {
  const started = performance.now();
  const offered = perTransport(servers);
  /** @type {Partial<Record<Transport, "ok" | "fail">>} */
  const results = {};
  await Promise.all(
    [...offered].map(async ([kind, server]) => {
      results[kind] = await probeFn(server);
    }),
  );
  return verdict(results, performance.now() - started);
}

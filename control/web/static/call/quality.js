// Call quality: the one place that reads `RTCPeerConnection.getStats()`. Every two seconds it
// takes the round trip (the selected candidate pair, else RTCP's remote-inbound) and the loss
// of what we receive since the last reading, and turns them into one level: good, fair or poor
// (poor while ICE is disconnected or failed: nothing flows then, whatever the numbers say).
// `level()` and `reduce()` are pure (unit-tested with node --test); `watch()` runs the loop.

/** @typedef {"good" | "fair" | "poor" | "unknown"} Level */

/**
 * @typedef {object} Reading
 * @property {number | null} rttMs
 * @property {number} received packets received so far (audio + video)
 * @property {number} lost packets lost so far
 */

/** ICE states in which no media flows, whatever the last readings said. */
const LOST = new Set(["disconnected", "failed"]);

export const THRESHOLDS = {
  good: { rttMs: 250, lossPct: 2 },
  fair: { rttMs: 600, lossPct: 8 },
};

/**
 * @param {{rttMs: number | null, lossPct: number | null}} m
 * @returns {Level}
 */
export function level(m) {
  if (m.rttMs === null && m.lossPct === null) return "unknown";
  const rtt = m.rttMs ?? 0;
  const loss = m.lossPct ?? 0;
  if (rtt <= THRESHOLDS.good.rttMs && loss <= THRESHOLDS.good.lossPct) return "good";
  if (rtt <= THRESHOLDS.fair.rttMs && loss <= THRESHOLDS.fair.lossPct) return "fair";
  return "poor";
}

/**
 * One reading from a stats report (anything iterable of stats objects, e.g. RTCStatsReport's
 * values()).
 * @param {Iterable<any>} stats
 * @returns {Reading}
 */
export function reduce(stats) {
  let rttMs = null;
  let remoteRtt = null;
  let received = 0;
  let lost = 0;
  /** @type {Map<string, any>} */
  const pairs = new Map();
  let selectedPair = null;
  for (const s of stats) {
    if (s.type === "candidate-pair") pairs.set(s.id, s);
    if (s.type === "transport" && s.selectedCandidatePairId) selectedPair = s.selectedCandidatePairId;
    if (s.type === "inbound-rtp") {
      received += s.packetsReceived || 0;
      lost += Math.max(0, s.packetsLost || 0);
    }
    if (s.type === "remote-inbound-rtp" && typeof s.roundTripTime === "number") {
      remoteRtt = Math.max(remoteRtt ?? 0, s.roundTripTime * 1000);
    }
  }
  let pair = selectedPair ? pairs.get(selectedPair) : null;
  if (!pair) pair = [...pairs.values()].find((p) => p.nominated && p.state === "succeeded");
  if (pair && typeof pair.currentRoundTripTime === "number") rttMs = pair.currentRoundTripTime * 1000;
  return { rttMs: rttMs ?? remoteRtt, received, lost };
}

/**
 * The level between two readings (loss over the interval, not since the start).
 * @param {Reading | null} before
 * @param {Reading} now
 * @returns {{level: Level, rttMs: number | null, lossPct: number | null}}
 */
export function compare(before, now) {
  let lossPct = null;
  if (before) {
    const got = now.received - before.received;
    const gone = now.lost - before.lost;
    if (got + gone > 0) lossPct = (100 * Math.max(0, gone)) / (got + gone);
  }
  const measured = { rttMs: now.rttMs, lossPct };
  return { level: level(measured), ...measured };
}

/**
 * Read the peer connection's stats every `ms` and report the level.
 * @param {RTCPeerConnection} pc
 * @param {(q: {level: Level, rttMs: number | null, lossPct: number | null}) => void} onLevel
 * @param {number} [ms]
 * @returns {() => void} stop
 */
export function watch(pc, onLevel, ms = 2000) {
  /** @type {Reading | null} */
  let last = null;
  let stopped = false;
  const tick = async () => {
    if (stopped || pc.connectionState === "closed") return;
    try {
      const report = await pc.getStats();
      const now = reduce(report.values());
      const q = compare(last, now);
      // while ICE is lost the stats keep the last round trip and count no loss: say poor
      if (LOST.has(pc.iceConnectionState)) q.level = "poor";
      onLevel(q);
      last = now;
    } catch {
      /* a closing connection: the next tick stops */
    }
  };
  const timer = setInterval(tick, ms);
  tick();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

/**
 * An agent's /livez probed while it writes a large rule set: a fallback
 * whose write held the event loop would leave the probes unanswered.
 */
import * as assert from 'uvu/assert';
import { Agent, Box } from './box';

/** One probe: when it began (ms), the HTTP code (0: no answer within 1.5 s), and how long it took (s). */
type Answer = [at: number, code: number, seconds: number];

/** /livez of `agent` on node `node` every 100 ms, at most `count` times, each given 1.5 s. */
export async function probeLivez(box: Box, node: string, agent: Agent, count: number): Promise<{ answers(): Answer[]; stop(): Promise<void> }> {
  await agent.proc.waitFor(/"msg":"health server listening"/, 10_000);
  const health = /"msg":"health server listening","addr":"([^"]+)"/.exec(agent.logs())![1]!;
  const { ns } = box.node(node);
  const probe = box.spawnArgv(
    [
      'ip',
      'netns',
      'exec',
      ns,
      'bash',
      '-c',
      `for i in $(seq 1 ${count}); do echo "$(date +%s%3N) $(curl -s -m 1.5 -o /dev/null -w '%{http_code} %{time_total}' http://${health}/livez)"; sleep 0.1; done`,
    ],
    ns,
  );
  return {
    answers: () =>
      probe
        .output()
        .trim()
        .split('\n')
        .map((l) => l.split(' ').map(Number) as Answer),
    stop: () => box.stopProc(probe, 500),
  };
}

/** The agent's `synced` line, `ms` long and ending at `ts`, was a write of at least a second during which every probe was answered, and there were probes. */
export function assertAnsweredDuring(answers: readonly Answer[], synced: string): void {
  const { ts, ms } = JSON.parse(synced) as { ts: string; ms: number };
  const end = Date.parse(ts);
  // The probes that ran while the rewrite was written (a probe that waits ends later than it began).
  const during = answers.filter(([at]) => at >= end - ms && at <= end);
  assert.ok(ms >= 1000, `the rewrite took ${ms} ms: too short to tell`);
  assert.equal(
    during.filter(([, code]) => code !== 200),
    [],
    `/livez while the rewrite ran (${ms} ms)`,
  );
  assert.ok(
    during.length >= 5,
    `${during.length} probes during the rewrite (${ms} ms): ${JSON.stringify(answers.filter(([at]) => at >= end - ms - 2000 && at <= end + 500).map(([at, c, t]) => [at - end, c, t]))}`,
  );
}

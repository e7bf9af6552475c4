/**
 * Loads the BPF objects the way the agent does (BpfDatapath.loadAsync) under
 * argv[2] and prints, as JSON, whether any thread of this process was at
 * SCHED_IDLE while loading and after. prog.test.ts runs it without
 * CAP_SYS_NICE, where a thread could not come back from idle priority, and
 * reads thread policies with threadPolicies() itself.
 */
import * as fs from 'node:fs';
import { BpfDatapath } from '../../ts/datapath/loader';
import { loadShim } from '../../ts/datapath/ffi';

export const SCHED_IDLE = 5;

/** Scheduling policy of each of this process's threads, by thread id (field 41 of /proc/.../stat). */
export function threadPolicies(): Map<number, number> {
  const out = new Map<number, number>();
  for (const t of fs.readdirSync('/proc/self/task')) {
    const st = fs.readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
    out.set(Number(t), Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[38]));
  }
  return out;
}

function anyIdle(): boolean {
  return [...threadPolicies().values()].includes(SCHED_IDLE);
}

async function main(): Promise<void> {
  const root = process.argv[2]!;
  let settled = false;
  let idleSeen = false;
  const loading = BpfDatapath.loadAsync(loadShim(), root, { ct: 65536, aff: 1024, skrevnat: 1024, svc: 65536, member: 65536 }).finally(() => (settled = true));
  while (!settled) {
    idleSeen ||= anyIdle();
    await new Promise((r) => setImmediate(r));
  }
  (await loading).close();
  process.stdout.write(JSON.stringify({ idleSeen, idleAfter: anyIdle() }));
}

if (require.main === module) void main();

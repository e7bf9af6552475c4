/**
 * Network namespace lifecycle: create, delete, find what still runs inside.
 * Commands inside a namespace (nsenter, never `ip netns exec`) come from
 * exec.ts and are re-exported here, so this module is the one import for
 * "namespaces".
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { must, nsMust, nsPath } from './exec';

export { NETNS_DIR, NsProcess, nsArgv, nsMust, nsPath, nsRun } from './exec';
export type { ExecResult, NsProcessOptions, RunOptions } from './exec';

/** `ip netns add` and bring lo up (a fresh namespace has lo down: even 127.0.0.1 fails). */
export async function addNetns(name: string): Promise<void> {
  await must(['ip', 'netns', 'add', name]);
  await nsMust(name, ['ip', 'link', 'set', 'lo', 'up']);
}

/**
 * `ip netns del`, synchronously (safe from an exit handler). This only
 * unmounts the name: the namespace itself (its veths, routes, tc programs)
 * lives on while any process is still inside — kill those first.
 */
export function delNetnsSync(name: string): void {
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore', timeout: 10_000 });
  } catch {
    /* already gone */
  }
}

/** The namespace's inode: what /proc/PID/ns/net of a process inside it points to. */
export function netnsInode(name: string): number | null {
  try {
    return fs.statSync(nsPath(name)).ino;
  } catch {
    return null;
  }
}

/** Pids of every process (except this one) whose network namespace is one of `inodes`. */
export function pidsInNetns(inodes: ReadonlySet<number>): number[] {
  const pids: number[] = [];
  if (inodes.size === 0) return pids;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let link: string;
    try {
      link = fs.readlinkSync(`/proc/${entry}/ns/net`);
    } catch {
      continue; // exited meanwhile, or a kernel thread
    }
    const m = /^net:\[(\d+)\]$/.exec(link);
    if (m && inodes.has(Number(m[1]))) pids.push(Number(entry));
  }
  return pids;
}

/**
 * One writer per pin root. Two agents writing the same pinned maps hand the
 * same rev-NAT and backend ids to different frontends and delete each
 * other's entries; the damage outlives both. A DaemonSet rollout with surge,
 * or a restarted agent whose predecessor has not exited yet, runs two agents
 * on one node, so every agent holds an exclusive flock(2) on its pin root
 * for its whole life, and a second one waits for it.
 *
 * The lock lives on the pin root directory itself (bpffs supports flock), so
 * agents in different containers exclude each other as long as they share
 * the host's bpffs, which they must anyway to share maps. The kernel drops
 * it when the holder exits, however it exits: SIGKILL needs no cleanup.
 */
import * as fs from 'node:fs';
import type { Shim } from './ffi';

export interface PinRootLock {
  readonly root: string;
  /** Release the lock (idempotent). */
  release(): void;
}

export interface WaitOptions {
  /** Called once, when the lock is found held: the holder's pid (null when not visible from here). */
  readonly onWait?: (holder: number | null) => void;
  /** How often to try again while another process holds it. */
  readonly pollMs?: number;
  /** Give up (throws) after this long; waits for good when absent. */
  readonly timeoutMs?: number;
}

/** Take the lock now, or null while another process holds it. The directory must exist. */
export function tryLockPinRoot(shim: Shim, root: string): PinRootLock | null {
  const fd = shim.dirLock(root);
  if (fd === null) return null;
  // `weir cleanup --force` may have removed the directory after we opened
  // it: a lock on a deleted inode excludes nobody, so it does not count.
  let current: fs.Stats | null = null;
  try {
    current = fs.statSync(root);
  } catch {
    // gone
  }
  const held = fs.fstatSync(fd);
  if (!current || current.ino !== held.ino || current.dev !== held.dev) {
    fs.closeSync(fd);
    return null;
  }
  let open = true;
  return {
    root,
    release: () => {
      if (open) fs.closeSync(fd);
      open = false;
    },
  };
}

/** Wait until this process holds the lock on root (created if missing). */
export async function lockPinRoot(shim: Shim, root: string, opts: WaitOptions = {}): Promise<PinRootLock> {
  const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
  let told = false;
  for (;;) {
    fs.mkdirSync(root, { recursive: true });
    const lock = tryLockPinRoot(shim, root);
    if (lock) return lock;
    if (!told) opts.onWait?.(lockHolder(root));
    told = true;
    if (Date.now() > deadline) throw new Error(`${root} is held by another weir agent (pid ${lockHolder(root) ?? 'unknown'})`);
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 200));
  }
}

/**
 * The pid holding a flock on dir, from /proc/locks (pids there are as this
 * process's pid namespace sees them; a holder in another one shows as 0),
 * or null when none is visible.
 */
export function lockHolder(dir: string): number | null {
  let st: fs.Stats;
  let text: string;
  try {
    st = fs.statSync(dir);
    text = fs.readFileSync('/proc/locks', 'utf8');
  } catch {
    return null;
  }
  const want = `${hex2(major(st.dev))}:${hex2(minor(st.dev))}:${st.ino}`;
  for (const line of text.split('\n')) {
    // "1: FLOCK  ADVISORY  WRITE 2987 00:28:6035 0 EOF"; waiters carry "->" and do not hold it.
    const f = line.trim().split(/\s+/);
    if (f[1] !== 'FLOCK' || f[5] !== want) continue;
    const pid = Number(f[4]);
    return pid > 0 ? pid : null;
  }
  return null;
}

// Linux's dev_t encoding (new_encode_dev), as stat(2) returns it.
const major = (dev: number): number => Number((BigInt(dev) >> 8n) & 0xfffn) | Number((BigInt(dev) >> 32n) & ~0xfffn);
const minor = (dev: number): number => Number(BigInt(dev) & 0xffn) | Number((BigInt(dev) >> 12n) & ~0xffn);
const hex2 = (n: number): string => n.toString(16).padStart(2, '0');

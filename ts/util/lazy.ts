/**
 * Node built-ins an agent needs only after it is ready, loaded on first use.
 * They are not in Node's start-up snapshot: node:child_process alone took
 * ~21 ms to load on the 2-vCPU machine of BENCHMARKS.md, on the path to the
 * first sync, where a BPF-mode agent starts no child process (`ip monitor`
 * and the removal of iptables-mode rules start after "ready").
 */
import type * as ChildProcess from 'node:child_process';

export function childProcess(): typeof ChildProcess {
  return require('node:child_process') as typeof ChildProcess;
}

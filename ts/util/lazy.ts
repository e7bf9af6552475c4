/**
 * Node built-ins an agent needs only after it is ready, loaded on first use.
 * They are not in Node's start-up snapshot, and loading them is on the path
 * to the first sync otherwise. On the 2-vCPU machine of BENCHMARKS.md:
 * node:child_process ~21 ms (a BPF-mode agent starts its first child,
 * `ip monitor`, after "ready"), node:http ~17 ms (the health and metrics
 * servers start after "ready").
 */
import type * as ChildProcess from 'node:child_process';
import type * as Http from 'node:http';

export function childProcess(): typeof ChildProcess {
  return require('node:child_process') as typeof ChildProcess;
}

export function http(): typeof Http {
  return require('node:http') as typeof Http;
}

/**
 * What the Syncer programs: the BPF maps (Reconciler) or iptables rules
 * (IptablesDataplane), from the same service plans.
 */
import { ObjectKey } from '../model/types';
import { ServicePlan } from '../plan/plan';
import { CommitStats, FrontendConflict, TruncatedFrontend } from './reconciler';

export interface Dataplane {
  /** Replace one service's plan (null: the service is gone). Nothing is written yet. */
  setService(service: ObjectKey, plan: ServicePlan | null): void;
  /**
   * Write what changed since the last commit. Throws (or rejects) on failure;
   * a retry converges. A promise: the write runs in a child process (iptables
   * mode), and nothing else is set or committed until it settles.
   */
  commit(): CommitStats | Promise<CommitStats>;
  /** Optionally start writing part of the next commit now (it may do nothing); commit() completes it. */
  flush?(): void;
  /** A hint before a large sync: about this many backends will exist once it is planned. */
  expectBackends?(n: number): void;
  /** Frontends another service already claimed, reported (and drained) by the Syncer. */
  readonly conflicts: FrontendConflict[];
  /** Frontends with more backends than the dataplane holds for one, reported (and drained) by the Syncer. */
  readonly truncated?: TruncatedFrontend[];
  /** The service a frontend ("addr:port/PROTO") belongs to, if any. */
  frontendOwner(frontend: string): ObjectKey | undefined;
  frontendCount(): number;
  backendCount(): number;
}

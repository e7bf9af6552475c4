/**
 * A source of cluster state. It writes objects into the ClusterStore and
 * says when something changed; `start` resolves once the first complete view
 * of every resource has arrived (nothing is pruned before that).
 */
export interface Source {
  start(): Promise<void>;
  stop(): void;
}

export type ChangeListener = () => void;

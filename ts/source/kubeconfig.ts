/**
 * Where `--source kube` finds its cluster, checked before the agent starts.
 * @kubernetes/client-node's loadFromDefault, finding no kubeconfig and no
 * service account, falls back to http://localhost:8080 (the API server's
 * old insecure port, gone since Kubernetes 1.20), and the informers would
 * retry it forever: weir says instead that it has no cluster, and exits.
 *
 * Kept apart from kube.ts so that this check does not load client-node.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Where client-node's loadFromCluster reads the pod's service account token. */
export const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * Where the cluster comes from, in the order KubeSource loads it: --kubeconfig,
 * in-cluster by KUBERNETES_SERVICE_HOST, then loadFromDefault's rules ($KUBECONFIG,
 * $HOME/.kube/config, the service account token). null: nowhere.
 */
export function kubeConfigOrigin(kubeconfig: string, env: NodeJS.ProcessEnv = process.env, exists: (p: string) => boolean = fs.existsSync): string | null {
  if (kubeconfig) return kubeconfig;
  if (env.KUBERNETES_SERVICE_HOST) return 'in-cluster';
  if (env.KUBECONFIG) return env.KUBECONFIG;
  const home = env.HOME ? path.join(env.HOME, '.kube', 'config') : null;
  if (home && exists(home)) return home;
  if (exists(SERVICE_ACCOUNT_TOKEN)) return 'in-cluster';
  return null;
}

/** Throws, naming every place weir looked, when kubeConfigOrigin finds none. */
export function requireKubeConfig(kubeconfig: string, env: NodeJS.ProcessEnv = process.env, exists: (p: string) => boolean = fs.existsSync): void {
  if (kubeConfigOrigin(kubeconfig, env, exists) !== null) return;
  const home = env.HOME ? `${path.join(env.HOME, '.kube', 'config')} does not exist` : 'HOME is unset';
  throw new Error(
    `--source kube: no cluster to connect to: no --kubeconfig, KUBECONFIG is unset, ${home}, and this is not a pod ` +
      `(no KUBERNETES_SERVICE_HOST and no ${SERVICE_ACCOUNT_TOKEN}); pass --kubeconfig FILE or set KUBECONFIG`,
  );
}

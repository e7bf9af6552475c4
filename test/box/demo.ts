/**
 * `make demo`: a two-node cluster in a box running one weir agent per node
 * on the manifests in deploy/examples/. Shows curl through a ClusterIP
 * spread over pods on both nodes, the same service through NodePorts and a
 * LoadBalancer IP from an outside client (masqueraded to the node IP),
 * a node process using the ClusterIP through the socket hooks, kube-proxy's
 * fast REJECT, and the maps as `weir services` prints them.
 * Everything lives in namespaces this script creates and removes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Box, REPO, withBox } from './box';

const say = (s: string): void => void process.stdout.write(`${s}\n`);

/** n requests from `from` to url, under a line that says what they are; then which backend answered how often. */
async function spread(box: Box, from: string, url: string, n: number, what: string): Promise<void> {
  say(`  -- ${what}: ${n} x curl ${url}`);
  const seen = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const r = await box.curl(from, url);
    const line = r.code === 0 ? r.body.trim() : `curl exit ${r.code}`;
    say(`   ${line}`);
    const who = line.split(' ')[0]!;
    seen.set(who, (seen.get(who) ?? 0) + 1);
  }
  say(`   spread: ${[...seen].map(([k, v]) => `${k}=${v}`).join(' ')}`);
}

async function main(): Promise<void> {
  await withBox({ nodes: 2 }, async (box) => {
    const [n1, n2] = [box.node('n1'), box.node('n2')];
    say(`== cluster in a box ${box.prefix}*: nodes n1 (${n1.ip}) and n2 (${n2.ip}), an outside client (192.168.77.200)`);
    for (const [node, name] of [
      ['n1', 'hello-a'],
      ['n1', 'hello-b'],
      ['n2', 'hello-c'],
    ] as const) {
      await box.addPod(node, name);
      await box.startEcho(name, { tcp: [8080], udp: [5353] });
    }
    await box.addPod('n1', 'client');
    await box.routeFromOutside('203.0.113.0/24', 'n1');
    const examples = path.join(REPO, 'deploy/examples');
    for (const f of fs.readdirSync(examples).filter((f) => /\.(ya?ml|json)$/.test(f))) {
      box.writeManifest(f, fs.readFileSync(path.join(examples, f), 'utf8'));
    }
    say(`== weir run --source file:deploy/examples on each node (--external-devices eth0 --cluster-cidr 10.244.0.0/16)`);
    await box.startAgent('n1');
    await box.startAgent('n2');
    await new Promise((r) => setTimeout(r, 700));

    say(
      '\n== pod "client" on n1 -> the ClusterIP (port 80 -> named targetPort http = 8080), spread over the pods of both nodes\n   (each line below: the pod that answered, and the client address it saw)',
    );
    await spread(box, 'client', 'http://10.96.0.10/', 9, 'ClusterIP from a pod');
    say('\n== outside: curl NodePort on each node and the LoadBalancer IP (eTP=Cluster: the backend sees the node IP)');
    await spread(box, 'outside', `http://${n1.ip}:30080/`, 4, 'NodePort on n1');
    await spread(box, 'outside', `http://${n2.ip}:30080/`, 4, 'NodePort on n2');
    await spread(box, 'outside', 'http://203.0.113.10/', 4, 'LoadBalancer IP (routed to n1)');
    say('\n== a process on node n1 (socket hooks): curl http://10.96.0.10/ and http://127.0.0.1:30080/');
    await spread(box, 'n1', 'http://10.96.0.10/', 3, 'ClusterIP from a node process (connect4 hook)');
    await spread(box, 'n1', 'http://127.0.0.1:30080/', 3, 'NodePort on 127.0.0.1 (--localhost-nodeports)');

    say('\n== UDP 10.96.0.10:53 -> pods :5353, from the client pod');
    const udp = await box.udp('client', '10.96.0.10:53', { count: 3 });
    for (const a of udp.attempts) say(`   ${a.ok ? `${a.backend} saw ${a.seenSrc}` : a.error}`);

    say('\n== curl http://10.96.0.20/ (a service with no endpoints): refused at once, like kube-proxy');
    const t0 = Date.now();
    const refused = await box.curl('client', 'http://10.96.0.20/');
    say(`   curl exit ${refused.code}${refused.code === 7 ? ' (connection refused)' : ''} after ${Date.now() - t0} ms`);

    say('\n== weir services on n1 (from the pinned maps)');
    process.stdout.write((await box.weir('n1', ['services'])).replace(/^/gm, '   '));
    say('\n== removing the box: agents stopped, namespaces, pins and cgroups removed');
  });
  say('== done');
}

main().catch((e) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exitCode = 1;
});

/**
 * `make demo`: a cluster in a box running weir on the manifests in
 * deploy/examples/. Shows curl through a ClusterIP spread over three pods,
 * UDP through the same service, kube-proxy's fast REJECT for a service with
 * no endpoints, and the programmed maps as `weir services` prints them.
 * Everything lives in namespaces this script creates and removes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { REPO, withBox } from './box';

const say = (s: string): void => void process.stdout.write(`${s}\n`);

async function main(): Promise<void> {
  await withBox({ nodes: 1 }, async (box) => {
    say(`== cluster in a box ${box.prefix}*: node n1 (${box.node('n1').ip}), pods hello-a/b/c, a client pod`);
    for (const name of ['hello-a', 'hello-b', 'hello-c']) {
      await box.addPod('n1', name);
      await box.startEcho(name, { tcp: [8080], udp: [5353] });
    }
    await box.addPod('n1', 'client');
    const examples = path.join(REPO, 'deploy/examples');
    for (const f of fs.readdirSync(examples).filter((f) => /\.(ya?ml|json)$/.test(f))) {
      box.writeManifest(f, fs.readFileSync(path.join(examples, f), 'utf8'));
    }
    say(`== weir run --source file:${box.manifestDir} (deploy/examples) in node n1`);
    const agent = await box.startAgent('n1');
    await new Promise((r) => setTimeout(r, 700)); // the device watcher attaches within 500 ms

    say('\n== 12 x curl http://10.96.0.10/ from the client pod (ClusterIP, port 80 -> named targetPort http = 8080)');
    const seen = new Map<string, number>();
    for (let i = 0; i < 12; i++) {
      const r = await box.curl('client', 'http://10.96.0.10/');
      const line = r.code === 0 ? r.body.trim() : `curl exit ${r.code}`;
      say(`   ${line}`);
      const who = line.split(' ')[0]!;
      seen.set(who, (seen.get(who) ?? 0) + 1);
    }
    say(`   spread: ${[...seen].map(([k, v]) => `${k}=${v}`).join(' ')}`);

    say('\n== UDP 10.96.0.10:53 -> pods :5353');
    const udp = await box.udp('client', '10.96.0.10:53', { count: 3 });
    for (const a of udp.attempts) say(`   ${a.ok ? `${a.backend} saw ${a.seenSrc}` : a.error}`);

    say('\n== curl http://10.96.0.20/ (a service with no endpoints): refused at once, like kube-proxy');
    const t0 = Date.now();
    const refused = await box.curl('client', 'http://10.96.0.20/');
    say(`   curl exit ${refused.code}${refused.code === 7 ? ' (connection refused)' : ''} after ${Date.now() - t0} ms`);

    say('\n== weir services (from the pinned maps)');
    process.stdout.write((await box.weir('n1', ['services'])).replace(/^/gm, '   '));
    await agent.stop();
    say('\n== agent stopped (dataplane left programmed); removing the box');
  });
  say('== done: namespaces, pins and processes removed');
}

main().catch((e) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exitCode = 1;
});

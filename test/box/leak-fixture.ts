/**
 * Used by test/e2e/box.test.ts: builds a box with a pod and a running agent,
 * prints its prefix, then fails the way a broken test would (`throw`: an
 * uncaught exception; `signal`: waits to be killed with SIGTERM). The box's
 * exit hooks must still remove everything.
 */
import { Box } from './box';

async function main(): Promise<void> {
  const box = await Box.create({ nodes: 1 });
  await box.addPod('n1', 'p');
  box.writeManifest('x.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {clusterIP: 10.96.9.9, ports: [{port: 80}]}\n');
  await box.startAgent('n1');
  process.stdout.write(`prefix ${box.prefix}\n`);
  if (process.argv[2] === 'throw') {
    setTimeout(() => {
      throw new Error('deliberate failure');
    }, 10);
  } else {
    setInterval(() => undefined, 1000);
  }
}

void main();

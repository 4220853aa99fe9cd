// Change trackers: previous/current per object, no-op updates dropped on
// arrival, changes that cancel out before a sync leave nothing pending.
//
// Address conventions: ClusterIPs 10.96.0.x, pods 10.244.<node>.<pod>
// (node-1 = this node).

import t from 'tap';
import { EndpointsChangeTracker, NodeTracker, ServiceChangeTracker } from '../../src/proxy/changes.js';
import { projectEndpointSlice, projectService } from '../../src/k8s/project.js';
import { nodeContext } from '../../src/proxy/desired.js';
import { NODE, slice, svc } from './fixtures.js';

t.test('ServiceChangeTracker: only changes the proxy reads count; previous is the state at the last take', async (t) => {
  const tr = new ServiceChangeTracker();
  const raw = (rv: string, port = 80, extra: Record<string, unknown> = {}) => ({
    ...svc('a', '10.96.0.1', [{ port, targetPort: 8080 }]),
    metadata: { name: 'a', namespace: 'web', resourceVersion: rv, managedFields: [{ manager: rv }], uid: 'u1', ...extra },
    status: { loadBalancer: {} },
  });
  t.equal(tr.update('web/a', projectService(raw('1'))), true, 'add');
  t.equal(tr.update('web/a', projectService(raw('2'))), false, 'resourceVersion and managedFields only: dropped');
  t.equal(tr.update('web/a', projectService(raw('3', 80, { annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}' } }))), false, 'an annotation the proxy ignores: dropped');
  let c = tr.take();
  t.same([...c.keys()], ['web/a']);
  t.equal(c.get('web/a')!.previous, undefined);
  t.equal(c.get('web/a')!.current!.spec.ports![0]!.port, 80);
  t.equal(tr.hasPending, false);

  t.equal(tr.update('web/a', projectService(raw('4', 81))), true);
  t.equal(tr.update('web/a', projectService(raw('5', 80))), true, 'changed back');
  t.same([...tr.take().keys()], [], 'changed and changed back before a sync: nothing pending');

  tr.update('web/a', projectService(raw('6', 82)));
  tr.update('web/a', projectService(raw('7', 83)));
  c = tr.take();
  t.equal(c.get('web/a')!.previous!.spec.ports![0]!.port, 80, 'previous: as the last sync saw it');
  t.equal(c.get('web/a')!.current!.spec.ports![0]!.port, 83);

  t.equal(tr.update('web/a', undefined), true, 'delete');
  t.equal(tr.update('web/a', undefined), false, 'delete of an unknown object');
  c = tr.take();
  t.same(c.get('web/a')!.current, undefined);
  t.equal(tr.size, 0);
});

t.test('EndpointsChangeTracker: grouped by Service, label moves dirty both, no-ops dropped', async (t) => {
  const tr = new EndpointsChangeTracker();
  const s1 = slice('a-1', 'a', [{ port: 8080 }], ['10.244.1.1']);
  const s2 = slice('a-2', 'a', [{ port: 8080 }], ['10.244.1.2']);
  t.equal(tr.update('web/a-1', projectEndpointSlice({ ...s1, metadata: { ...s1.metadata, resourceVersion: '1' } })), true);
  t.equal(tr.update('web/a-1', projectEndpointSlice({ ...s1, metadata: { ...s1.metadata, resourceVersion: '2', generation: 2 } })), false, 'metadata only: dropped');
  tr.update('web/a-2', projectEndpointSlice(s2));
  t.same([...tr.take()], ['web/a']);
  t.same(tr.slicesOf('web/a').map((s) => s.metadata.name).sort(), ['a-1', 'a-2']);

  // The slice is relabelled to Service b: both a and b need recomputing.
  tr.update('web/a-2', projectEndpointSlice(slice('a-2', 'b', [{ port: 8080 }], ['10.244.1.2'])));
  t.same([...tr.take()].sort(), ['web/a', 'web/b']);
  t.same(tr.slicesOf('web/a').map((s) => s.metadata.name), ['a-1']);
  t.same(tr.slicesOf('web/b').map((s) => s.metadata.name), ['a-2']);

  // An endpoint becomes not ready and ready again before the sync: nothing pending.
  tr.update('web/a-1', projectEndpointSlice(slice('a-1', 'a', [{ port: 8080 }], [{ addresses: ['10.244.1.1'], conditions: { ready: false } }])));
  tr.update('web/a-1', projectEndpointSlice(s1));
  t.same([...tr.take()], []);

  tr.update('web/a-1', undefined);
  t.same([...tr.take()], ['web/a']);
  t.same(tr.slicesOf('web/a'), []);
  t.equal(tr.size, 1);
});

t.test('NodeTracker: only a zone change counts', async (t) => {
  const tr = new NodeTracker((n) => nodeContext(NODE, n).zone);
  const node = (zone?: string, extra: Record<string, string> = {}) => ({ apiVersion: 'v1' as const, kind: 'Node' as const, metadata: { name: NODE, labels: { ...(zone ? { 'topology.kubernetes.io/zone': zone } : {}), ...extra } } });
  t.equal(tr.update(node(undefined, { team: 'x' })), false, 'no zone before, none now');
  t.equal(tr.update(node('zone-a')), true);
  t.equal(tr.update(node('zone-a', { team: 'y' })), false, 'another label');
  t.equal(tr.take(), true);
  t.equal(tr.update(node('zone-b')), true);
  t.equal(tr.update(node('zone-a')), true);
  t.equal(tr.take(), false, 'back to the zone of the last take');
});

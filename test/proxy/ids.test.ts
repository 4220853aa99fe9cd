import t from 'tap';
import { IdAllocator, IdsExhaustedError } from '../../src/proxy/ids.js';

t.test('ids: never 0, stable per key, fresh before reused', async (t) => {
  const a = new IdAllocator('frontend', 4);
  t.equal(a.allocate('x'), 1);
  t.equal(a.allocate('y'), 2);
  t.equal(a.allocate('x'), 1, 'same key, same id');
  a.release('x');
  t.equal(a.get('x'), undefined);
  t.equal(a.allocate('z'), 3, 'a released id is not reused while fresh ones remain');
  t.equal(a.allocate('w'), 4);
  t.equal(a.allocate('x'), 1, 'then the released one');
  t.throws(() => a.allocate('v'), IdsExhaustedError);
  t.equal(a.keyOf(4), 'w');
  a.retain(new Set(['w']));
  t.same([...a.keys()], ['w']);
  t.equal(a.size, 1);
});

t.test('restore claims ids found in the maps and moves the fresh counter past them', async (t) => {
  const a = new IdAllocator('backend');
  t.ok(a.restore('10.244.1.1:8080/TCP', 7));
  t.ok(a.restore('10.244.1.1:8080/TCP', 7), 'restoring the same pair again is fine');
  t.notOk(a.restore('10.244.1.2:8080/TCP', 7), 'id taken by another key');
  t.notOk(a.restore('10.244.1.1:8080/TCP', 8), 'key already has another id');
  t.notOk(a.restore('k', 0), '0 is never an id');
  t.notOk(a.restore('k', 2 ** 32), 'u32 only');
  t.equal(a.allocate('10.244.1.3:8080/TCP'), 8);
  t.equal(a.keyOf(8), '10.244.1.3:8080/TCP');
});

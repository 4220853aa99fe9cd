// The NodePort suite (nodeport.suite.ts) with --nodeport-acceleration xdp-tx:
// as nodeport-xdp.test.ts, and a request through node1 to the backend on
// node2 must have been sent on by node1's XDP program itself (XDP_TX, the
// xdp_tx counter), not by the stack. The fabric's veth ends run NAPI (GRO on)
// so that XDP_TX on the nodes' uplinks delivers (MultiNodeCluster.fabricNapi).
import { nodePortSuite } from './nodeport.suite.js';

await nodePortSuite('xdp-tx');

// The NodePort suite (nodeport.suite.ts) with --nodeport-acceleration xdp:
// every case must pass with kbp_xdp_node in front of tc on both uplinks, and
// the external client's requests must have been translated by XDP (the
// xdp_forward counter), not merely passed through to tc. The client sends
// complete checksums, as a host behind a wire does (see
// MultiNodeCluster.clientChecksumsComplete).
import { nodePortSuite } from './nodeport.suite.js';

await nodePortSuite('xdp');

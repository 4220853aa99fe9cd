// NodePort, LoadBalancer and externalTrafficPolicy across two nodes with the
// datapath on tc alone (the default). The suite: nodeport.suite.ts.
import { nodePortSuite } from './nodeport.suite.js';

await nodePortSuite('none');

// The JS metering baseline (bench/metered) without its `console.log`: the difference between
// the two is what one log line per request costs under the local runtime. workerd's CLI writes
// each console.log to stdout through node:util's inspect, a module it loads on the isolate's
// first log line; Cloudflare's runtime hands log lines to Workers Logs without that formatting
// (workerd's `Worker::handleLog`: the inspect path is the STDOUT console mode's alone).
import { metering } from "../metered/meter.js";

export default metering({ log: false });

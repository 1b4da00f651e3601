"""`make bench`: the order path (alone, then under 10 stations x 125 changing telemetry values
every 100 ms with an OPC UA subscriber), the order path at scale as `linebridge run` runs it
(1,000 orders with and without OPC UA, restart and memory with them retained), then telemetry at
plant scale, in one run."""

from bench import order_path, telemetry, throughput

alone = throughput.main([])
print()
loaded = throughput.main(["--telemetry-load", "125"])
if alone and loaded:
    print(f"step overhead p99 under telemetry / alone: {loaded / alone:.2f}")
print()
order_path.main([])
print()
telemetry.main([])

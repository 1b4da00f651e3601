"""`make bench`: the order path (alone, then under 10 stations x 125 changing telemetry values
every 100 ms with an OPC UA subscriber), all orders at once and then paced at 10 orders/s, the
order path at scale as `linebridge run` runs it (1,000 orders with and without OPC UA, restart and
memory with them retained), then telemetry at plant scale, in one run."""

from bench import order_path, telemetry, throughput

LOAD = ["--telemetry-load", "125"]
PACED = ["--rate", "10"]

ratios = {}
for name, extra in (("all orders at once", []), ("paced at 10 orders/s", PACED)):
    alone = throughput.main(extra)
    print()
    loaded = throughput.main(extra + LOAD)
    print()
    if alone and loaded:
        ratios[name] = loaded / alone
for name, ratio in ratios.items():
    print(f"step overhead p99 under telemetry / alone, {name}: {ratio:.2f}")
print()
order_path.main([])
print()
telemetry.main([])

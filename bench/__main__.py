"""`make bench`: the order path (alone, then under 10 stations x 125 changing telemetry values
every 100 ms with an OPC UA subscriber), all orders at once and then paced at 10 orders/s; paced
once more with that telemetry polled and published by a second bridge process (what a process of
its own would leave of the telemetry's cost); the order path at scale as `linebridge run` runs it
(1,000 orders with and without OPC UA, restart and memory with them retained), then telemetry at
plant scale, then journal retention on a long line's journal, in one run."""

from bench import order_path, retention, telemetry, throughput

LOAD = ["--telemetry-load", "125"]
PACED = ["--rate", "10"]
ELSEWHERE = ["--telemetry-elsewhere"]

ratios = {}
for name, extra, elsewhere in (
    ("all orders at once", [], False),
    ("paced at 10 orders/s", PACED, True),
):
    alone = throughput.main(extra)
    print()
    loaded = throughput.main(extra + LOAD)
    print()
    if alone and loaded:
        ratios[name] = loaded / alone
    if elsewhere:
        apart = throughput.main(extra + LOAD + ELSEWHERE)
        print()
        if alone and apart:
            ratios[f"{name}, telemetry in a second bridge process"] = apart / alone
for name, ratio in ratios.items():
    print(f"step overhead p99 under telemetry / alone, {name}: {ratio:.2f}")
print()
order_path.main([])
print()
telemetry.main([])
print()
retention.main([])

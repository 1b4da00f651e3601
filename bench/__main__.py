"""`make bench`: the order path (alone, then under 10 stations x 125 changing telemetry values
every 100 ms with an OPC UA subscriber), then telemetry at plant scale, in one run."""

from bench import telemetry, throughput

throughput.main([])
print()
throughput.main(["--telemetry-load", "125"])
print()
telemetry.main([])

"""`make bench`: the order path, then telemetry at plant scale, in one run."""

from bench import telemetry, throughput

throughput.main()
telemetry.main()

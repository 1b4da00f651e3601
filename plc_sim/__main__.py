from plc_sim.cli import main

main()

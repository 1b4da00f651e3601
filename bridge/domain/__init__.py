"""The domain: orders, units, steps, their state machine and routing. No protocol code here."""

"""The engines: `des` (SimPy, exact for what it models) and `fluid` (numpy, any scale)."""

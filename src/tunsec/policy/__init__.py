"""Policy: the SPD entries and SAs tunsec derives from configuration."""

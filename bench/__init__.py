"""Clickacall benchmarks: load generator driver, forwarders to compare against, runner."""

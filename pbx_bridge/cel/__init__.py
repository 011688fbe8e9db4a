"""Asterisk's CEL (Channel Event Logging) as a second source of calls: the rows, grouped into
calls, turned into the AMI events the call tracker reads, and read from the PBX's database."""

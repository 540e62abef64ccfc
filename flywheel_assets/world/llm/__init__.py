"""The LLM layer (client, call cache, call log) and the LLM-backed world roles: mock user,
mock tool, judge, task writer. ``roles.build_world_roles`` builds them from endpoint configs."""

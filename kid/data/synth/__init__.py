"""`python -m kid.data.synth` (CONTRACT 2): the embedded benchmark's command, kept at its
contract name. The generator is `kid.synth`, above `kid.data` and `kid.sql` (it prompts
nothing and parses its gold SQL), so nothing in `kid.data` imports it."""

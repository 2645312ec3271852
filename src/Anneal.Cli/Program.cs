// Entry point of `anneal`. TODO(cli): commands.
return 0;

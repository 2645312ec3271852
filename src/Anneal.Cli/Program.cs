// Entry point of `anneal`: the command tree lives in AnnealApp.
return await Anneal.Cli.AnnealApp.MainAsync(args);

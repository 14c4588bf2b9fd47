"""Training and tooling helpers; models/ stays free of them, each module here has one job."""

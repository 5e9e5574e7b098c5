from stackpanel.cli import main

raise SystemExit(main())

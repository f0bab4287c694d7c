from cronsvc.cli import main

raise SystemExit(main())

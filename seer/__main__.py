from seer.cli import main

raise SystemExit(main())

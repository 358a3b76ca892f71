from llama2_scratch.cli import main

raise SystemExit(main())

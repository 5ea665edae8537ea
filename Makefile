# Builds and installs chpox's tools, their man pages and their shell completions.
#   make install                       # release build into /usr/local
#   make install PREFIX=$HOME/.local   # or anywhere; DESTDIR=... stages it for packaging
#   make uninstall                     # removes exactly what install put
# Everything generated stays under .build/ (git ignores it).

CONFIGURATION ?= release
PREFIX ?= /usr/local
DESTDIR ?=
SWIFT ?= swift

# The commands people run, with man pages and completions (all three use ArgumentParser).
TOOLS := cpx ld-chpox dumpinfo
# Programs the commands exec. Injector.helperPath looks for them beside the running
# executable, so they must be installed into the same bin directory as cpx and ld-chpox.
HELPERS := chpox-inject chpox-restore-stub
PROGRAMS := $(TOOLS) $(HELPERS)

# Where SwiftPM puts the binaries of this configuration (asked, not guessed: it includes the triple).
BIN_PATH = $(shell $(SWIFT) build -c $(CONFIGURATION) --show-bin-path)
# The generate-manual plugin always writes into its own work directory, one folder per tool.
PLUGIN_OUT := .build/plugins/GenerateManual/outputs
MAN_OUT := .build/man
COMPLETIONS_OUT := .build/completions

BINDIR := $(DESTDIR)$(PREFIX)/bin
MAN1DIR := $(DESTDIR)$(PREFIX)/share/man/man1
# The directories bash-completion, zsh and fish search without any configuration.
BASHDIR := $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHDIR := $(DESTDIR)$(PREFIX)/share/zsh/site-functions
FISHDIR := $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d

.PHONY: all build man completions install uninstall
all: build man completions

# One product per call: swift build keeps only the last of several --product options.
build:
	for product in $(PROGRAMS); do $(SWIFT) build -c $(CONFIGURATION) --product $$product || exit 1; done

# The plugin builds every product of the package (it cannot be limited to some) and writes a
# page for each ArgumentParser executable, chpox-demo included; only ours are kept. One page
# per tool: cpx's page describes its subcommands.
man: build
	$(SWIFT) package plugin generate-manual --configuration $(CONFIGURATION)
	mkdir -p $(MAN_OUT)
	for tool in $(TOOLS); do cp $(PLUGIN_OUT)/$$tool/$$tool.1 $(MAN_OUT)/; done

# Written under the names each shell looks for, so install copies them as they are.
completions: build
	mkdir -p $(COMPLETIONS_OUT)/bash $(COMPLETIONS_OUT)/zsh $(COMPLETIONS_OUT)/fish
	bin="$(BIN_PATH)" && for tool in $(TOOLS); do \
	    "$$bin/$$tool" --generate-completion-script bash > $(COMPLETIONS_OUT)/bash/$$tool && \
	    "$$bin/$$tool" --generate-completion-script zsh > $(COMPLETIONS_OUT)/zsh/_$$tool && \
	    "$$bin/$$tool" --generate-completion-script fish > $(COMPLETIONS_OUT)/fish/$$tool.fish || exit 1; \
	done

install: build man completions
	install -d $(BINDIR) $(MAN1DIR) $(BASHDIR) $(ZSHDIR) $(FISHDIR)
	install -m 0755 $(addprefix $(BIN_PATH)/,$(PROGRAMS)) $(BINDIR)/
	install -m 0644 $(addprefix $(MAN_OUT)/,$(TOOLS:=.1)) $(MAN1DIR)/
	install -m 0644 $(addprefix $(COMPLETIONS_OUT)/bash/,$(TOOLS)) $(BASHDIR)/
	install -m 0644 $(addprefix $(COMPLETIONS_OUT)/zsh/_,$(TOOLS)) $(ZSHDIR)/
	install -m 0644 $(addprefix $(COMPLETIONS_OUT)/fish/,$(TOOLS:=.fish)) $(FISHDIR)/

# Files only: the directories (/usr/local/bin...) are shared with everything else installed there.
uninstall:
	rm -f $(addprefix $(BINDIR)/,$(PROGRAMS))
	rm -f $(addprefix $(MAN1DIR)/,$(TOOLS:=.1))
	rm -f $(addprefix $(BASHDIR)/,$(TOOLS))
	rm -f $(addprefix $(ZSHDIR)/_,$(TOOLS))
	rm -f $(addprefix $(FISHDIR)/,$(TOOLS:=.fish))

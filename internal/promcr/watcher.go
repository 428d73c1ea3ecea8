package promcr

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/blang/semver/v4"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	monitoringv1alpha1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1alpha1"
	"github.com/prometheus-operator/prometheus-operator/pkg/assets"
	monitoringclient "github.com/prometheus-operator/prometheus-operator/pkg/client/versioned"
	"github.com/prometheus-operator/prometheus-operator/pkg/informers"
	"github.com/prometheus-operator/prometheus-operator/pkg/listwatch"
	"github.com/prometheus-operator/prometheus-operator/pkg/operator"
	promoperator "github.com/prometheus-operator/prometheus-operator/pkg/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	commonconfig "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/kubernetes"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
	"go.uber.org/zap/zapcore"
	"go.yaml.in/yaml/v2"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	k8sclient "k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/embedded-ta/embedded-ta/internal/discovery"
)

const (
	// resync re-lists the informers' caches and so regenerates the jobs,
	// which re-reads the Secrets and ConfigMaps they reference.
	resync = 5 * time.Minute
	// settle batches the events of one change (an apply of several objects).
	settle = 200 * time.Millisecond
	// syncTimeout bounds the wait for the first listing; resources that
	// cannot be listed by then (no RBAC) are reported and retried.
	syncTimeout = 30 * time.Second
)

// Options configure a Watcher.
type Options struct {
	Config Config
	// Namespace and Name identify the group; the resources' namespace
	// selectors and the generated jobs see them as the Prometheus object's.
	Namespace, Name string
	// REST reaches the API server.
	REST *rest.Config
	// KubeconfigFile, if set, is given to the generated jobs' Kubernetes
	// service discovery that names no API server (outside a cluster).
	KubeconfigFile string
	Logger         *zap.Logger
}

// Watcher watches Prometheus Operator resources and turns the selected,
// valid ones into scrape configs.
type Watcher struct {
	o       Options
	logger  *zap.Logger
	core    k8sclient.Interface
	mon     monitoringclient.Interface
	prom    *monitoringv1.Prometheus
	gen     *promoperator.ConfigGenerator
	metrics *operator.Metrics
	out     chan []*config.ScrapeConfig

	// Belong to Run's goroutine.
	jobs      map[string]job
	published bool
	rejected  map[string]string // "<kind> <ns>/<name>" -> reason, last logged
}

type job struct {
	doc string
	sc  *config.ScrapeConfig
}

// resource is one watched kind of the monitoring.coreos.com group.
type resource struct {
	kind     string
	gvr      schema.GroupVersionResource
	informer *informers.ForResource
}

// New returns a Watcher; Run starts it.
func New(o Options) (*Watcher, error) {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	core, err := k8sclient.NewForConfig(o.REST)
	if err != nil {
		return nil, err
	}
	mon, err := monitoringclient.NewForConfig(o.REST)
	if err != nil {
		return nil, err
	}
	classes, err := o.Config.scrapeClasses()
	if err != nil {
		return nil, err
	}
	prom := o.Config.prometheus(o.Namespace, o.Name, classes)
	logger := o.Logger
	gen, err := promoperator.NewConfigGenerator(slogger(logger), prom,
		promoperator.WithEndpointSliceSupport(), promoperator.WithInlineTLSConfig())
	if err != nil {
		return nil, fmt.Errorf("prometheus_cr: %w", err)
	}
	return &Watcher{
		o: o, logger: logger, core: core, mon: mon, prom: prom, gen: gen,
		metrics:  operator.NewMetrics(prometheus.NewRegistry()),
		out:      make(chan []*config.ScrapeConfig, 1),
		jobs:     map[string]job{},
		rejected: map[string]string{},
	}, nil
}

// slogger routes the operator library's warnings and errors to zap.
func slogger(logger *zap.Logger) *slog.Logger {
	core := logger.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel)).Core()
	return slog.New(zapslog.NewHandler(core, zapslog.WithName(logger.Name()),
		zapslog.AddStacktraceAt(slog.LevelError+1)))
}

// Updates delivers the resources' scrape configs, sorted by job name, after
// each change; it holds only the latest. The first comes once the resources
// were listed (or could not be within 30 s).
func (w *Watcher) Updates() <-chan []*config.ScrapeConfig { return w.out }

// Run watches until ctx is done and returns once everything it started has
// stopped. If it cannot start (no RBAC on namespaces, say), it returns the
// error, having sent an empty update if it never sent one: the jobs of
// config.scrape_configs must not wait for a watch that may never work.
func (w *Watcher) Run(ctx context.Context) (err error) {
	defer func() {
		if err != nil && !w.published {
			w.publish(map[string]job{})
		}
	}()
	resources, err := w.installed(ctx)
	if err != nil {
		return err
	}
	allow, deny := w.namespaces()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The namespace selectors need the namespaces and their labels; without
	// that permission nothing else starts.
	lw, _, err := listwatch.NewNamespaceListWatchFromClient(ctx, slogger(w.logger),
		semver.MustParse("1.22.0"), w.core.CoreV1(), w.core.AuthorizationV1().SelfSubjectAccessReviews(), allow, deny)
	if err != nil {
		return fmt.Errorf("prometheus_cr: watch namespaces: %w", err)
	}
	factory := informers.NewMonitoringInformerFactories(allow, deny, w.mon, resync, nil)
	trigger := make(chan struct{}, 1)
	poke := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	var synced []cache.InformerSynced
	for i := range resources {
		r := &resources[i]
		r.informer, err = informers.NewInformersForResource(factory, r.gvr)
		if err != nil {
			return fmt.Errorf("prometheus_cr: informer for %s: %w", r.gvr.Resource, err)
		}
		for _, inf := range r.informer.GetInformers() {
			_, _ = inf.Informer().AddEventHandler(handler)
			synced = append(synced, inf.Informer().HasSynced)
			wg.Go(func() { inf.Informer().RunWithContext(ctx) })
		}
	}
	nsInformer := cache.NewSharedIndexInformer(lw, &corev1.Namespace{}, resync, cache.Indexers{})
	_, _ = nsInformer.AddEventHandler(handler)
	synced = append(synced, nsInformer.HasSynced)
	wg.Go(func() { nsInformer.RunWithContext(ctx) })
	for _, ns := range w.secretNamespaces() {
		inf, err := w.watchSecrets(ctx, ns, poke)
		if err != nil {
			w.logger.Warn("Changed Secrets reach the jobs only with the next change of a resource, or within 5 minutes",
				zap.String("namespace", ns), zap.Error(err))
			continue
		}
		synced = append(synced, inf.HasSynced)
		wg.Go(func() { inf.RunWithContext(ctx) })
	}

	syncCtx, stop := context.WithTimeout(ctx, syncTimeout)
	if !cache.WaitForCacheSync(syncCtx.Done(), synced...) && ctx.Err() == nil {
		w.logger.Error("Prometheus Operator resources could not all be listed; going on with those that could (check the RBAC of prometheus_cr)",
			zap.Duration("waited", syncTimeout))
	}
	stop()
	w.logger.Info("Watching Prometheus Operator resources", zap.Strings("kinds", kinds(resources)))
	for {
		if ctx.Err() != nil {
			return nil
		}
		w.update(ctx, resources, nsInformer)
		select {
		case <-ctx.Done():
			return nil
		case <-trigger:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(settle):
		}
		select { // events during settle are in this round
		case <-trigger:
		default:
		}
	}
}

func kinds(rs []resource) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.kind)
	}
	return out
}

// namespaces are the allow and deny lists as the operator's informers take them.
func (w *Watcher) namespaces() (allow, deny map[string]struct{}) {
	allow, deny = map[string]struct{}{}, map[string]struct{}{}
	for _, n := range w.o.Config.AllowNamespaces {
		allow[n] = struct{}{}
	}
	if len(allow) == 0 {
		allow[metav1.NamespaceAll] = struct{}{}
	}
	for _, n := range w.o.Config.DenyNamespaces {
		deny[n] = struct{}{}
	}
	return allow, deny
}

// installed returns the kinds whose CRDs the API server serves, retrying
// while it cannot tell; a kind that is not installed is logged and left out.
func (w *Watcher) installed(ctx context.Context) ([]resource, error) {
	want := []resource{
		{kind: monitoringv1.ServiceMonitorsKind, gvr: monitoringv1.SchemeGroupVersion.WithResource(monitoringv1.ServiceMonitorName)},
		{kind: monitoringv1.PodMonitorsKind, gvr: monitoringv1.SchemeGroupVersion.WithResource(monitoringv1.PodMonitorName)},
		{kind: monitoringv1.ProbesKind, gvr: monitoringv1.SchemeGroupVersion.WithResource(monitoringv1.ProbeName)},
		{kind: monitoringv1alpha1.ScrapeConfigsKind, gvr: monitoringv1alpha1.SchemeGroupVersion.WithResource(monitoringv1alpha1.ScrapeConfigName)},
	}
	served := map[schema.GroupVersion]map[string]bool{}
	for _, r := range want {
		gv := r.gvr.GroupVersion()
		if served[gv] != nil {
			continue
		}
		warned := false
		err := wait.PollUntilContextCancel(ctx, 5*time.Second, true, func(context.Context) (bool, error) {
			list, err := w.core.Discovery().ServerResourcesForGroupVersion(gv.String())
			if err != nil && !apierrors.IsNotFound(err) {
				if !warned {
					w.logger.Warn("Cannot list the Prometheus Operator's API resources; retrying", zap.String("group_version", gv.String()), zap.Error(err))
					warned = true
				}
				return false, nil
			}
			served[gv] = map[string]bool{}
			if list != nil {
				for _, res := range list.APIResources {
					served[gv][res.Name] = true
				}
			}
			return true, nil
		})
		if err != nil {
			return nil, err
		}
	}
	var out []resource
	for _, r := range want {
		if served[r.gvr.GroupVersion()][r.gvr.Resource] {
			out = append(out, r)
		} else {
			w.logger.Warn("Prometheus Operator CRD not installed; its resources are not watched",
				zap.String("kind", r.kind), zap.String("resource", r.gvr.GroupResource().String()))
		}
	}
	return out, nil
}

// update regenerates the jobs and publishes them if they changed.
func (w *Watcher) update(ctx context.Context, resources []resource, nsInformer cache.SharedIndexInformer) {
	jobs, err := w.generate(ctx, resources, nsInformer)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		w.logger.Error("Cannot generate scrape configs from Prometheus Operator resources", zap.Error(err))
		return
	}
	changed := len(jobs) != len(w.jobs)
	for name, j := range jobs {
		if prev, ok := w.jobs[name]; ok && prev.doc == j.doc {
			jobs[name] = prev // unchanged jobs keep their config, and their discovery
		} else {
			changed = true
		}
	}
	if !changed && w.published {
		return
	}
	w.publish(jobs)
}

// publish sends jobs as the latest update.
func (w *Watcher) publish(jobs map[string]job) {
	w.jobs = jobs
	w.published = true
	out := make([]*config.ScrapeConfig, 0, len(jobs))
	for _, name := range slices.Sorted(maps.Keys(jobs)) {
		out = append(out, jobs[name].sc)
	}
	select {
	case <-w.out:
	default:
	}
	w.out <- out
	w.logger.Info("Scrape configs from Prometheus Operator resources", zap.Int("jobs", len(out)))
}

// generate selects and validates the resources with the operator's own code,
// which also reads the Secrets and ConfigMaps they reference, and generates
// their jobs.
func (w *Watcher) generate(ctx context.Context, resources []resource, nsInformer cache.SharedIndexInformer) (map[string]job, error) {
	store := assets.NewStoreBuilder(w.core.CoreV1(), w.secrets())
	// The selector records an event per rejected resource into a buffered
	// fake recorder, which must not fill up: at most one per object.
	n := 0
	for _, r := range resources {
		_ = r.informer.ListAll(labels.Everything(), func(any) { n++ })
	}
	rs, err := promoperator.NewResourceSelector(slog.New(slog.DiscardHandler), w.prom, store, nsInformer, w.metrics,
		operator.NewFakeRecorder(n+1024, w.prom))
	if err != nil {
		return nil, err
	}
	var (
		sMons  map[string]*monitoringv1.ServiceMonitor
		pMons  map[string]*monitoringv1.PodMonitor
		probes map[string]*monitoringv1.Probe
		sCons  map[string]*monitoringv1alpha1.ScrapeConfig
		seen   = map[string]string{}
	)
	for _, r := range resources {
		list := r.informer.ListAllByNamespace
		switch r.kind {
		case monitoringv1.ServiceMonitorsKind:
			sel, err := rs.SelectServiceMonitors(ctx, list)
			if err != nil {
				return nil, fmt.Errorf("select ServiceMonitors: %w", err)
			}
			sMons = sel.ValidResources()
			rejections(r.kind, sel, seen)
		case monitoringv1.PodMonitorsKind:
			sel, err := rs.SelectPodMonitors(ctx, list)
			if err != nil {
				return nil, fmt.Errorf("select PodMonitors: %w", err)
			}
			pMons = sel.ValidResources()
			rejections(r.kind, sel, seen)
		case monitoringv1.ProbesKind:
			sel, err := rs.SelectProbes(ctx, list)
			if err != nil {
				return nil, fmt.Errorf("select Probes: %w", err)
			}
			probes = sel.ValidResources()
			rejections(r.kind, sel, seen)
		case monitoringv1alpha1.ScrapeConfigsKind:
			sel, err := rs.SelectScrapeConfigs(ctx, list)
			if err != nil {
				return nil, fmt.Errorf("select ScrapeConfigs: %w", err)
			}
			sCons = sel.ValidResources()
			rejections(r.kind, sel, seen)
		}
	}
	doc, err := w.gen.GenerateServerConfiguration(w.prom, sMons, pMons, probes, sCons, store, nil, nil, nil, nil)
	if err != nil {
		return nil, err
	}
	jobs, err := w.parse(doc, seen)
	if err != nil {
		return nil, err
	}
	w.report(seen)
	return jobs, nil
}

// rejections adds the selection's rejected resources and their reasons to seen.
func rejections[T operator.ConfigurationResource](kind string, sel operator.TypedResourcesSelection[T], seen map[string]string) {
	for key, r := range sel {
		for _, c := range r.Conditions() {
			if c.Status == monitoringv1.ConditionFalse {
				seen[kind+" "+key] = c.Message
			}
		}
	}
}

// report logs each rejected resource once per reason, and when it is fixed
// or gone.
func (w *Watcher) report(seen map[string]string) {
	for _, key := range slices.Sorted(maps.Keys(seen)) {
		if w.rejected[key] != seen[key] {
			w.logger.Warn("Skipping "+key+": "+seen[key], zap.String("resource", key), zap.String("reason", seen[key]))
		}
	}
	for key := range w.rejected {
		if _, ok := seen[key]; !ok {
			w.logger.Info("No longer skipping "+key+" (fixed or deleted)", zap.String("resource", key))
		}
	}
	w.rejected = seen
}

// parse loads each generated job on its own with Prometheus's loader, so
// that one the loader refuses is skipped, not all. With
// deny_fs_access_through_sms, it leaves out the jobs that read files, and
// adds each with its reason to skipped.
func (w *Watcher) parse(doc []byte, skipped map[string]string) (map[string]job, error) {
	// The generated relabelings keep the targets of the shard that the
	// config reloader of a Prometheus pod substitutes for $(SHARD). Here
	// allocation shards, and the jobs are one shard's: 0 (of 1).
	doc = bytes.ReplaceAll(doc, []byte("$("+operator.ShardEnvVar+")"), []byte("0"))
	var generated struct {
		Global        map[string]any `yaml:"global"`
		ScrapeConfigs []any          `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(doc, &generated); err != nil {
		return nil, fmt.Errorf("read generated config: %w", err)
	}
	// External labels belong to a Prometheus server, not to its jobs.
	delete(generated.Global, "external_labels")
	global := map[string]any{}
	for k, v := range generated.Global {
		global[k] = v
	}
	jobs := make(map[string]job, len(generated.ScrapeConfigs))
	for _, raw := range generated.ScrapeConfigs {
		one, err := yaml.Marshal(raw)
		if err != nil {
			return nil, err
		}
		cfg, err := discovery.LoadConfig(map[string]any{"global": global, "scrape_configs": []any{raw}})
		if err != nil {
			w.logger.Warn("Skipping a generated job that Prometheus refuses", zap.String("job", jobName(raw)), zap.Error(err))
			continue
		}
		sc := cfg.ScrapeConfigs[0]
		if files := readsFiles(sc.HTTPClientConfig); w.o.Config.DenyFSAccessThroughSMs && len(files) > 0 {
			skipped["job "+sc.JobName] = "it reads files (" + strings.Join(files, ", ") + "), which prometheus_cr::deny_fs_access_through_sms denies"
			continue
		}
		if w.o.KubeconfigFile != "" {
			for _, c := range sc.ServiceDiscoveryConfigs {
				if k, ok := c.(*kubernetes.SDConfig); ok && k.APIServer.URL == nil && k.KubeConfig == "" {
					k.KubeConfig = w.o.KubeconfigFile
				}
			}
		}
		jobs[sc.JobName] = job{doc: string(one), sc: sc}
	}
	return jobs, nil
}

// readsFiles names the settings of a job's HTTP client that read a file
// of the member's file system.
func readsFiles(c commonconfig.HTTPClientConfig) []string {
	var out []string
	add := func(key, path string) {
		if path != "" {
			out = append(out, key)
		}
	}
	add("bearer_token_file", c.BearerTokenFile)
	if c.Authorization != nil {
		add("authorization::credentials_file", c.Authorization.CredentialsFile)
	}
	if c.BasicAuth != nil {
		add("basic_auth::username_file", c.BasicAuth.UsernameFile)
		add("basic_auth::password_file", c.BasicAuth.PasswordFile)
	}
	if c.OAuth2 != nil {
		add("oauth2::client_secret_file", c.OAuth2.ClientSecretFile)
		add("oauth2::tls_config::ca_file", c.OAuth2.TLSConfig.CAFile)
		add("oauth2::tls_config::cert_file", c.OAuth2.TLSConfig.CertFile)
		add("oauth2::tls_config::key_file", c.OAuth2.TLSConfig.KeyFile)
	}
	add("tls_config::ca_file", c.TLSConfig.CAFile)
	add("tls_config::cert_file", c.TLSConfig.CertFile)
	add("tls_config::key_file", c.TLSConfig.KeyFile)
	return out
}

func jobName(raw any) string {
	if m, ok := raw.(map[any]any); ok {
		if s, ok := m["job_name"].(string); ok {
			return s
		}
	}
	return strings.TrimSpace(fmt.Sprint(raw))
}

// secretNamespaces are the namespaces of secret_namespaces, by default the
// group's own.
func (w *Watcher) secretNamespaces() []string {
	if len(w.o.Config.SecretNamespaces) == 0 {
		return []string{w.o.Namespace}
	}
	return w.o.Config.SecretNamespaces
}

// secrets reads Secrets in the secret namespaces; a resource that
// references one elsewhere is skipped with that reason.
func (w *Watcher) secrets() corev1client.SecretsGetter {
	allowed := map[string]bool{}
	for _, ns := range w.secretNamespaces() {
		allowed[ns] = true
	}
	return scopedSecrets{SecretsGetter: w.core.CoreV1(), allowed: allowed}
}

// watchSecrets returns an informer on the Secrets of namespace that pokes
// on every change of one, so that a changed password or a Secret created
// for a skipped resource reaches the jobs within seconds. It keeps only the
// Secrets' metadata: the jobs read the values when they are generated. It
// needs list and watch on secrets there; without them it says which.
func (w *Watcher) watchSecrets(ctx context.Context, namespace string, poke func()) (cache.SharedIndexInformer, error) {
	for _, verb := range []string{"list", "watch"} {
		review, err := w.core.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: namespace, Verb: verb, Resource: "secrets",
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("check %s on secrets: %w", verb, err)
		}
		if !review.Status.Allowed {
			return nil, fmt.Errorf("missing %q permission on resource %q in namespace %s", verb, "secrets", namespace)
		}
	}
	inf := cache.NewSharedIndexInformer(cache.NewListWatchFromClient(w.core.CoreV1().RESTClient(), "secrets", namespace, fields.Everything()),
		&corev1.Secret{}, resync, cache.Indexers{})
	if err := inf.SetTransform(func(obj any) (any, error) {
		if s, ok := obj.(*corev1.Secret); ok {
			s.Data, s.StringData = nil, nil
		}
		return obj, nil
	}); err != nil {
		return nil, err
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { poke() },
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*corev1.Secret)
			c, ok2 := cur.(*corev1.Secret)
			if !ok1 || !ok2 || o.ResourceVersion != c.ResourceVersion { // not a resync
				poke()
			}
		},
		DeleteFunc: func(any) { poke() },
	})
	return inf, err
}

type scopedSecrets struct {
	corev1client.SecretsGetter
	allowed map[string]bool
}

func (s scopedSecrets) Secrets(namespace string) corev1client.SecretInterface {
	if s.allowed[namespace] {
		return s.SecretsGetter.Secrets(namespace)
	}
	return outOfScope{SecretInterface: s.SecretsGetter.Secrets(namespace), namespace: namespace}
}

// outOfScope is the Secrets of a namespace outside secret_namespaces: the
// Prometheus Operator's store only gets them, and gets an error.
type outOfScope struct {
	corev1client.SecretInterface
	namespace string
}

func (o outOfScope) Get(_ context.Context, name string, _ metav1.GetOptions) (*corev1.Secret, error) {
	return nil, fmt.Errorf("secret %s/%s: namespace %s is not one of prometheus_cr::secret_namespaces", o.namespace, name, o.namespace)
}
